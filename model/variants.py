"""Every model variant under a name, created through one `create_model(name, **cfg)`.

A variant is a model class, its config class and default overrides. The `*_test` variants are
the same models shrunk to run in seconds on a CPU (what the tests use); tests parametrize over
`list_models()`, so a new variant is tested for free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from model.baselines import PatchesBaseline, ProxyOnlyBaseline, ResizeBaseline
from model.config import PatchesConfig, ProxyOnlyConfig, ResizeConfig, SaccaderConfig
from model.interface import BatchClassifier
from model.saccader import Saccader


@dataclass(frozen=True)
class Variant:
    """A registered model: what to build and the defaults that differ from the config's."""

    model: type[BatchClassifier]
    config: type
    defaults: dict[str, Any]


_TINY_SACCADER = {
    "hidden": 16,
    "window": 8,
    "proxy_size": 16,
    "encoder_width": 4,
    "encoder_blocks": (1, 1),
    "glimpses": 2,
}
_TINY_RESNET = {"width": 4, "blocks": (1, 1, 1, 1)}

_REGISTRY: dict[str, Variant] = {
    "saccader": Variant(Saccader, SaccaderConfig, {}),
    "saccader_feed_glimpse": Variant(Saccader, SaccaderConfig, {"feed_glimpse": True}),
    # the locator that learned where to look on a CPU (BENCHMARKS.md, "Localization (issue 7)")
    "saccader_heatmap": Variant(Saccader, SaccaderConfig, {"locator": "heatmap"}),
    "resnet18_resize224": Variant(ResizeBaseline, ResizeConfig, {}),
    "resnet18_patches": Variant(PatchesBaseline, PatchesConfig, {}),
    "proxy_only": Variant(ProxyOnlyBaseline, ProxyOnlyConfig, {}),
    "saccader_test": Variant(Saccader, SaccaderConfig, _TINY_SACCADER),
    "saccader_feed_glimpse_test": Variant(
        Saccader, SaccaderConfig, {**_TINY_SACCADER, "feed_glimpse": True}
    ),
    "saccader_heatmap_test": Variant(
        Saccader,
        SaccaderConfig,
        {**_TINY_SACCADER, "locator": "heatmap", "heatmap_stride": 2, "inhibit_return": True},
    ),
    "resnet18_resize224_test": Variant(
        ResizeBaseline, ResizeConfig, {**_TINY_RESNET, "image_size": 32}
    ),
    "resnet18_patches_test": Variant(
        PatchesBaseline, PatchesConfig, {**_TINY_RESNET, "patch_size": 32}
    ),
    "proxy_only_test": Variant(
        ProxyOnlyBaseline, ProxyOnlyConfig, {**_TINY_RESNET, "proxy_size": 16}
    ),
}


def list_models() -> list[str]:
    """The registered names, sorted."""
    return sorted(_REGISTRY)


def _variant(name: str) -> Variant:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(list_models())}")
    return _REGISTRY[name]


def config_type(name: str) -> type:
    """The config dataclass of the registered model `name` (its fields are the settings)."""
    return _variant(name).config


def variant_settings(name: str) -> dict[str, Any]:
    """What the variant `name` sets beyond its config's defaults (e.g. its locator)."""
    return dict(_variant(name).defaults)


# Settings renamed since models were first saved: checkpoints and registered models keep the
# names of their day, read here under the current ones.
RENAMED_SETTINGS = {"latent": "hidden", "part_classes": "class_parts"}


def current_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """`cfg` with any renamed setting under its current name."""
    return {RENAMED_SETTINGS.get(key, key): value for key, value in cfg.items()}


def model_config(name: str, **cfg: Any) -> Any:
    """The config `create_model(name, **cfg)` would use (for logging a run's parameters)."""
    cfg = current_settings(cfg)
    variant = _variant(name)
    fields = dataclasses.fields(variant.config)
    known = {f.name for f in fields}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown {name} settings {unknown}; known: {sorted(known)}")
    values = {**variant.defaults, **cfg}
    missing = [
        f.name
        for f in fields
        if f.name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ValueError(
            f"model {name!r} needs {missing}: "
            f"e.g. create_model({name!r}, num_classes=10, in_channels=1)"
        )
    return variant.config(**values)


def create_model(name: str, **cfg: Any) -> BatchClassifier:
    """Build the registered model `name` with config overrides `cfg` (on the CPU; move it with
    `.to(device)`). Unknown names or settings raise a ValueError naming the known ones."""
    config = model_config(name, **cfg)
    return _variant(name).model(config)
