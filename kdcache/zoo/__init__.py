"""kdcache's model zoo: the ``kdcache:NAME`` models.

Importing this package registers every model; ``list_models()`` names them
and ``create_model(name, num_classes, in_channels)`` builds one with fresh
weights. Add a model with ``@register_model("name")`` on a factory taking
``num_classes`` and ``in_channels`` by keyword.
"""

from __future__ import annotations

from kdcache.zoo._registry import (
    ModelFactory,
    create_model,
    get_factory,
    list_models,
    register_model,
)

# Imported for their registrations.
from kdcache.zoo import mobilenetv2, resnet, shufflenetv2, small, vgg, wrn  # noqa: E402,F401

__all__ = ["ModelFactory", "create_model", "get_factory", "list_models", "register_model"]
