"""Message contracts: what travels on each topic, and the codecs that read and write it.

Imports nothing from the rest of the project, so gateways and analysts can depend on it alone.
"""

SCHEMA_VERSION = 1
