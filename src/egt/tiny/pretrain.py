"""Perception pre-training of the tiny judge: caption synthetic scenes before it is taught to judge.

A real base VLM has learnt to see (from captions) before anyone fine-tunes it as a
judge. The tiny judge starts from random weights, and from the judge traces alone it
learns to read colours, shapes and places slowly: a trace holds one or two decisive
tokens. So `egt model tiny` (egt.tiny.build.build_tiny) first trains it for `steps` optimizer
steps on `CAPTION_PROMPT` -> `synth.scene_caption` of a fresh synthetic scene, e.g.

    Describe the image.  ->  I see a small orange triangle at the bottom right and a large green
                             circle in the centre. The orange triangle is right of the green circle.

and, like an instruction-tuned VLM that can say whether a statement about an image holds,
`verify_share` of each batch checks one claim (`synth.verify_text`):

    What colour is the circle? Claim: It is blue. Is the claim right?
                             ->  I see a green circle. The claim says blue, I see green: no.

Without it the judge had to learn that comparison from the judge traces alone, and whether
it did within one SFT epoch depended on the seed (docs/models.md, the tiny judge: SFT judges from one
caption-only base ranged from 0.07 to 0.51 both-order accuracy over two seeds).

AdamW (betas 0.9 / 0.98), linear warm-up over the first 1/30 of the steps then a cosine
decay, gradient norm clipped at 1, loss on the caption tokens (and their end-of-turn
token) only. Batches are built by egt.model.encoding.chat_batch_inputs, as every other batch.
"""

from __future__ import annotations

from egt.model.encoding import chat_batch_inputs

CAPTION_PROMPT = "Describe the image."


def pretrain_perception(model, processor, steps: int, batch_size: int = 8, lr: float = 1e-3, seed: int = 0,
                        verify_share: float = 0.0) -> dict:
    """Caption-train `model` in place for `steps` steps; returns loss and timing stats.

    `verify_share` of every batch are single-claim checks (`synth.verify_examples`) instead of captions."""
    import math
    import time

    import torch
    from tqdm.auto import tqdm

    from egt.data.synth import caption_examples, verify_examples

    def chat(text: str) -> str:
        return processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                                                                             "text": text}]}],
                                             tokenize=False, add_generation_prompt=True)

    prompt = chat(CAPTION_PROMPT)
    n_verify = int(round(batch_size * verify_share))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    warmup = max(1, steps // 30)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * s / steps)))
    model.train()
    losses, t0 = [], time.perf_counter()
    for step in tqdm(range(steps), desc="pre-training perception (captions)", unit="step", mininterval=2.0):
        examples = [(img, prompt, text) for img, text in caption_examples(step * batch_size, batch_size - n_verify,
                                                                           seed)]
        examples += [(img, chat(question), answer)
                     for img, question, answer in verify_examples(step * n_verify, n_verify, seed)]
        inputs = chat_batch_inputs(processor, [p for _, p, _ in examples], [img for img, _, _ in examples],
                                   [text for _, _, text in examples], padding_side="right", append_eos=True)
        labels = inputs["input_ids"].masked_fill(inputs.pop("completion_mask") == 0, -100)
        loss = model(**inputs, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    model.eval()
    tail = max(1, min(50, steps // 10))
    return {"pretrain_seconds": round(time.perf_counter() - t0, 1), "pretrain_steps": steps,
            "pretrain_first_loss": round(sum(losses[:tail]) / tail, 4),
            "pretrain_last_loss": round(sum(losses[-tail:]) / tail, 4)}
