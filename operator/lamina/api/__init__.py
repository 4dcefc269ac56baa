"""The public API types of Lamina: group ``lamina.dev``, version ``v1alpha1``.

These pydantic models define the custom resources.  ``lamina crds`` turns them into
CustomResourceDefinitions; ``crds/`` holds the generated files and a test fails when they drift.
"""

from lamina.api.commit import (
    ContainerCommit,
    ContainerCommitSpec,
    ContainerCommitStatus,
)
from lamina.api.image import Image, ImageSpec, ImageStatus
from lamina.api.layer import Layer, LayerSpec, LayerStatus
from lamina.api.meta import GROUP, VERSION, Condition, ConditionStatus

__all__ = [
    "GROUP",
    "VERSION",
    "Condition",
    "ConditionStatus",
    "ContainerCommit",
    "ContainerCommitSpec",
    "ContainerCommitStatus",
    "Image",
    "ImageSpec",
    "ImageStatus",
    "Layer",
    "LayerSpec",
    "LayerStatus",
]
