"""Message contracts: what travels on each topic, and the codecs that read and write it.

The contract itself is the JSON Schema files in ``schemas/json/``; imports nothing from the rest of the project, so
gateways and analysts can depend on it alone.
"""

SCHEMA_VERSION = 2
