# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Spec resolution, registration, and that importing the package stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tanl_guard.encoders import list_encoders, register_encoder, resolve
from tanl_guard.encoders import registry as registry_module


def test_builtins_are_listed():
    assert {"biomedclip", "open_clip", "surrogate"} <= set(list_encoders())
    assert registry_module.DEFAULT_ENCODER == "biomedclip"


def test_register_and_resolve_a_custom_factory(tiny_clip, monkeypatch):
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    seen = {}

    @register_encoder("mine")
    def factory(body, *, spec, device="cpu", **kwargs):
        seen.update(body=body, spec=spec, device=device, **kwargs)
        return tiny_clip

    assert resolve("mine:some:thing", device="cpu", flavour=1) is tiny_clip
    assert seen == {"body": "some:thing", "spec": "mine:some:thing", "device": "cpu", "flavour": 1}
    assert "mine" in list_encoders()
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("mine", lambda body, **kw: tiny_clip)
    with pytest.raises(ValueError, match="without ':'"):
        register_encoder("a:b", factory)


def test_bad_specs():
    with pytest.raises(ValueError, match="unknown encoder"):
        resolve("nonesuch")
    with pytest.raises(ValueError, match="non-empty"):
        resolve("  ")
    with pytest.raises(ValueError, match="open_clip:ARCH:PRETRAINED"):
        resolve("open_clip")


def test_import_is_light():
    code = (
        "import sys, tanl_guard.encoders as e; e.resolve; "
        "heavy = [m for m in ('open_clip', 'transformers', 'timm', 'huggingface_hub') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
