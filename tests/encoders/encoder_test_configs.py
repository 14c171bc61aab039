# Copyright (c) tanl-guard developers. Licensed under the Apache License, Version 2.0.
"""Constants shared by the encoder tests and their fixtures (a uniquely named module, unlike conftest)."""

from __future__ import annotations

TINY_ARCH = "tanl-tiny-vit"

#: ViT width 64, 2 layers, patch 16, image 64; text width 64, 2 layers, context 77 with CLIP's BPE vocabulary.
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

#: The shape of BiomedCLIP's open_clip_config.json, shrunk: a tiny ViT and a tiny BERT named as PubMedBERT is.
BIOMED_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
        "text_cfg": {
            "hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
}

LOGIT_SCALE = 42.0
