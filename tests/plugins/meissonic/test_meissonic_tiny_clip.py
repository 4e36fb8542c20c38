"""The tiny CLIP that pretrains the bundled text encoder: captions and what the training achieves."""
import math
import re

import torch
import torch.nn.functional as F

from dimo_meissonic.conditions import CLASS_PHRASES, EVAL_TEMPLATES, TRAIN_TEMPLATES, caption_words
from dimo_meissonic.text import build_clip_tokenizer, tiny_clip_text_config
from dimo_meissonic.tiny_clip import class_words, distractor_words, perturbed_caption, train_text_encoder


def test_perturbed_captions_keep_their_class_and_name_no_other():
    rng = torch.Generator().manual_seed(0)
    nouns = class_words()
    distractors = distractor_words()
    assert {"shirt", "boot", "sneaker"} <= nouns and not nouns & set(distractors)
    for i in range(300):
        label = i % 10
        caption = perturbed_caption(label, rng, distractors, p_insert=0.5, p_drop=0.2)
        assert CLASS_PHRASES[label] in caption
        others = {w for j, p in enumerate(CLASS_PHRASES) if j != label for w in re.findall(r"[a-z]+", p)}
        own = set(re.findall(r"[a-z]+", CLASS_PHRASES[label]))
        assert not (set(caption.split()) - own) & (others & nouns), caption


def eval_template_accuracy(encoder, tokenizer) -> float:
    """Nearest class centroid (over training-template prompts) of each held-out-template prompt."""
    def embed(templates):
        prompts = [t.format(p) for t in templates for p in CLASS_PHRASES]
        ids = tokenizer(prompts, padding="max_length", max_length=16, return_tensors="pt").input_ids
        with torch.no_grad():
            return F.normalize(encoder(ids).text_embeds, dim=-1), torch.arange(len(prompts)) % 10
    train, train_labels = embed(TRAIN_TEMPLATES)
    held_out, labels = embed(EVAL_TEMPLATES)
    centroids = torch.stack([train[train_labels == c].mean(0) for c in range(10)])
    return float(((held_out @ centroids.T).argmax(1) == labels).float().mean())


def test_contrastive_pretraining_makes_held_out_templates_readable():
    from transformers import CLIPTextModelWithProjection
    torch.manual_seed(0)
    tokenizer = build_clip_tokenizer(caption_words(), 16)
    encoder = CLIPTextModelWithProjection(tiny_clip_text_config(len(tokenizer), 16, 32, 32, 1)).eval()
    # images: one fixed random pattern per class plus noise, so a caption's class is all there is to match
    patterns = torch.rand(10, 1, 28, 28)
    labels = torch.arange(2000) % 10
    images = (patterns[labels] + 0.3 * torch.randn(2000, 1, 28, 28)).clamp(0, 1)
    before = eval_template_accuracy(encoder, tokenizer)
    history = train_text_encoder(encoder, tokenizer, images, labels, steps=100, batch_size=64, lr=3e-3, seed=0)
    after = eval_template_accuracy(encoder, tokenizer)
    assert after >= 0.9 > before, (before, after)
    # chance is log 64 = 4.16; with ~6.4 images of the caption's class per batch the floor is log 6.4 = 1.86
    assert history[-1]["loss"] < math.log(64) - 1.5
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())
