"""A random-init ResNet-50 + attention checkpoint, NEU's six classes at 160 px: the stand-in INT8 artifact's
architecture, for throughput only (no accuracy claim; the trained weights are too large to carry)."""

import sys
from pathlib import Path

import torch

from models.checkpoint import ModelMeta, save_checkpoint
from models.network import DefectClassifier

torch.manual_seed(0)
classes = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
model = DefectClassifier(num_classes=len(classes), backbone="resnet50").eval()
save_checkpoint(
    Path(sys.argv[1]),
    model,
    ModelMeta(class_names=classes, backbone="resnet50", input_size=160, version="random-init-r50-160"),
)
print("checkpoint", sys.argv[1])
