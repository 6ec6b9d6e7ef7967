"""The KI model: vision tower + projector + Gemma-style decoder, and a flow-matching action expert
that shares every layer's attention (a mixture of transformers; paper section 3, appendix B).

Token streams. Backbone: image tokens of each present camera, then the sample's text tokens
(prefix with full attention, FAST/text targets causal after it). Expert: the noisy action chunk.
Attention: backbone tokens follow openpi's rule (a token sees every earlier-or-equal "block":
prefix bidirectional, postfix causal) and never see expert tokens; expert tokens see the valid
prefix tokens and each other, never FAST tokens. Expert positions continue right after the prefix.

Knowledge insulation (eq. 5-6): expert queries attend to ``detach(backbone keys/values)`` and their
own keys/values. The forward pass is the un-insulated model's; only gradients change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kidata.model.config import ModelConfig
from kidata.model.layers import AdaRMSNorm, GeGLU, RMSNorm, VisionTower, rotary, timestep_embedding


class _Layer(nn.Module):
    """One stream's weights in one layer: attention projections, MLP and their norms. Both
    streams use the same heads and head dim, so their attention can be joined."""

    def __init__(self, c: ModelConfig, width: int, mlp: int, norm) -> None:
        super().__init__()
        self.norm, self.mlp_norm = norm(), norm()
        self.q = nn.Linear(width, c.heads * c.head_dim, bias=False)
        self.kv = nn.Linear(width, 2 * c.kv_heads * c.head_dim, bias=False)
        self.o = nn.Linear(c.heads * c.head_dim, width, bias=False)
        self.mlp = GeGLU(width, mlp)


def _backbone_layer(c: ModelConfig) -> _Layer:
    return _Layer(c, c.width, c.mlp, lambda: RMSNorm(c.width))


def _expert_layer(c: ModelConfig) -> _Layer:
    return _Layer(c, c.expert_width, c.expert_mlp, lambda: AdaRMSNorm(c.expert_width, c.expert_width))


class KIModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = self.config = config
        self.vision = VisionTower(c.image_size, c.patch_size, c.vision_width, c.vision_depth, c.vision_heads, c.vision_mlp)
        self.projector = nn.Linear(c.vision_width, c.width)
        self.embed = nn.Embedding(c.vocab_size, c.width)
        self.layers = nn.ModuleList(_backbone_layer(c) for _ in range(c.depth))
        self.final_norm = RMSNorm(c.width)
        self.expert_layers = nn.ModuleList(_expert_layer(c) for _ in range(c.depth))
        self.expert_final_norm = AdaRMSNorm(c.expert_width, c.expert_width)
        self.action_in = nn.Linear(c.action_dim, c.expert_width)
        self.action_out = nn.Linear(c.expert_width, c.action_dim)
        self.time_mlp = nn.Sequential(nn.Linear(c.expert_width, c.expert_width), nn.SiLU(),
                                      nn.Linear(c.expert_width, c.expert_width), nn.SiLU())

    # ------------------------------------------------------------------ inputs
    def backbone_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Embeddings [B, Lb, W], valid [B, Lb], causal-block flags [B, Lb], image token count."""
        images = batch["images"]
        b, n = images.shape[:2]
        patches = self.projector(self.vision(images.flatten(0, 1))).unflatten(0, (b, n))  # [B, N, P, W]
        patch_count = patches.shape[2]
        image_tokens = patches.flatten(1, 2)
        image_valid = batch["image_mask"][:, :, None].expand(b, n, patch_count).flatten(1)
        text = self.embed(batch["tokens"]) * self.config.width**0.5
        embeddings = torch.cat([image_tokens, text], dim=1)
        valid = torch.cat([image_valid, batch["token_mask"]], dim=1)
        ar = torch.cat([torch.zeros_like(image_valid), batch["ar"] & batch["token_mask"]], dim=1)
        return embeddings, valid, ar, image_tokens.shape[1]

    @staticmethod
    def backbone_mask(valid: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
        """bool [B, Lb, Lb]: i sees j when j's causal block is not after i's (openpi's rule)."""
        blocks = torch.cumsum(ar.long(), dim=1)
        return (blocks[:, None, :] <= blocks[:, :, None]) & valid[:, None, :] & valid[:, :, None]

    # ------------------------------------------------------------------ attention
    def _split(self, layer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        q = layer.q(x).unflatten(-1, (c.heads, c.head_dim)).transpose(1, 2)
        k, v = layer.kv(x).unflatten(-1, (2, c.kv_heads, c.head_dim)).permute(2, 0, 3, 1, 4)
        return q, k, v

    def _attend(self, q, k, v, mask) -> torch.Tensor:
        repeat = self.config.heads // self.config.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
        return out.transpose(1, 2).flatten(2)

    def _backbone_layer(self, layer, h, positions, mask):
        q, k, v = self._split(layer, layer.norm(h))
        q, k = rotary(q, positions, self.config.rope_theta), rotary(k, positions, self.config.rope_theta)
        h = h + layer.o(self._attend(q, k, v, mask))
        return h + layer.mlp(layer.mlp_norm(h)), (k, v)

    def _expert_layer(self, layer, h, cond, positions, prefix_kv, prefix_visible):
        normed, gate = layer.norm(h, cond)
        q, k, v = self._split(layer, normed)
        q, k = rotary(q, positions, self.config.rope_theta), rotary(k, positions, self.config.rope_theta)
        prefix_k, prefix_v = prefix_kv
        if self.config.stop_gradient:  # knowledge insulation: no gradient into the backbone's keys/values
            prefix_k, prefix_v = prefix_k.detach(), prefix_v.detach()
        keys, values = torch.cat([prefix_k, k], dim=2), torch.cat([prefix_v, v], dim=2)
        own = torch.ones(h.shape[0], h.shape[1], h.shape[1], dtype=torch.bool, device=h.device)
        mask = torch.cat([prefix_visible[:, None, :].expand(-1, h.shape[1], -1), own], dim=2)
        h = h + gate * layer.o(self._attend(q, keys, values, mask))
        normed, gate = layer.mlp_norm(h, cond)
        return h + gate * layer.mlp(normed)

    # ------------------------------------------------------------------ passes
    def run_backbone(self, batch: dict):
        """Backbone hidden states [B, Lb, W], per-layer (k, v), valid, ar, image token count."""
        embeddings, valid, ar, image_count = self.backbone_inputs(batch)
        positions = torch.cumsum(valid.long(), dim=1) - 1
        mask = self.backbone_mask(valid, ar)
        h, cache = embeddings, []
        for layer in self.layers:
            h, kv = self._backbone_layer(layer, h, positions, mask)
            cache.append(kv)
        return self.final_norm(h), cache, valid, ar, image_count

    def run_expert(self, noisy: torch.Tensor, t: torch.Tensor, cache, valid, ar) -> torch.Tensor:
        """Velocity [B, H, A] of noisy actions at time t, attending to the prefix in ``cache``."""
        prefix_visible = valid & ~ar & (torch.cumsum(ar.long(), dim=1) == 0)
        start = prefix_visible.sum(dim=1, keepdim=True)  # expert positions continue after the prefix
        positions = start + torch.arange(noisy.shape[1], device=noisy.device)[None]
        cond = self.time_mlp(timestep_embedding(t, self.config.expert_width))
        h = self.action_in(noisy)
        for layer, kv in zip(self.expert_layers, cache):
            h = self._expert_layer(layer, h, cond, positions, kv, prefix_visible)
        normed, _ = self.expert_final_norm(h, cond)
        return self.action_out(normed)

    def forward(self, batch: dict, *, noise: torch.Tensor | None = None, t: torch.Tensor | None = None) -> dict:
        """Losses (FAST cross-entropy on loss-masked tokens, flow MSE) and outputs for a batch."""
        hidden, cache, valid, ar, image_count = self.run_backbone(batch)
        text_hidden = hidden[:, image_count:]
        logits = text_hidden @ self.embed.weight.T  # tied embeddings, as Gemma
        targets, target_mask = batch["tokens"][:, 1:], batch["loss"][:, 1:]
        token_loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), reduction="none")
        ce = (token_loss * target_mask.flatten()).sum() / target_mask.sum().clamp(min=1)
        actions = batch["actions"]
        if noise is None:
            noise = torch.randn_like(actions)
        if t is None:
            t = torch.distributions.Beta(1.5, 1.0).sample((actions.shape[0],)).to(actions) * 0.999 + 0.001
        noisy = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
        velocity = self.run_expert(noisy, t, cache, valid, ar)
        weight = (batch["action_valid"][:, :, None] & batch["action_dim_mask"][:, None, :]
                  & batch["has_actions"][:, None, None]).float()
        flow = (((velocity - (noise - actions)) ** 2) * weight).sum() / weight.sum().clamp(min=1)
        loss = flow * self.config.flow_weight + (ce if self.config.fast_loss else 0.0)
        return {"loss": loss, "flow_loss": flow, "fast_loss": ce, "logits": logits, "velocity": velocity}

    @torch.no_grad()
    def sample_actions(self, batch: dict, *, num_steps: int = 10, noise: torch.Tensor | None = None,
                       use_cache: bool = True) -> torch.Tensor:
        """Euler integration of the expert from t = 1 to 0; the prefix runs once (KV cache).

        ``batch`` holds only the prefix (no FAST tokens). ``use_cache=False`` recomputes the
        backbone every step (for checking the cache)."""
        b = batch["tokens"].shape[0]
        shape = (b, self.config.action_horizon, self.config.action_dim)
        x = torch.randn(shape) if noise is None else noise.clone()
        _, cache, valid, ar, _ = self.run_backbone(batch)
        dt = -1.0 / num_steps
        for step in range(num_steps):
            t = torch.full((b,), 1.0 + step * dt)
            if not use_cache:
                _, cache, valid, ar, _ = self.run_backbone(batch)
            x = x + dt * self.run_expert(x, t, cache, valid, ar)
        return x

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int, *, stop_ids: tuple[int, ...] = (), use_cache: bool = True
                 ) -> torch.Tensor:
        """Greedy decoding after the prefix (text answers, or FAST tokens on the pi0-FAST path).

        ``batch`` holds only the prefix, left-aligned (padding after it). Returns int64
        [B, max_new_tokens]; rows stop after a token in ``stop_ids`` (EOS, "|") and are padded
        with that token. The prefix keys/values are computed once and grown by one per step."""
        b = batch["tokens"].shape[0]
        hidden, cache, valid, ar, image_count = self.run_backbone(batch)
        last = valid.long().cumsum(dim=1).argmax(dim=1)  # index of each row's last real token
        next_logits = (hidden[torch.arange(b), last] @ self.embed.weight.T)
        position = valid.long().sum(dim=1)  # next position to fill
        keys = [k for k, _ in cache]
        values = [v for _, v in cache]
        visible = valid.clone()
        out = torch.zeros(b, max_new_tokens, dtype=torch.int64)
        done = torch.zeros(b, dtype=torch.bool)
        tokens = batch["tokens"]
        for step in range(max_new_tokens):
            token = torch.where(done, out[:, step - 1] if step else next_logits.argmax(-1), next_logits.argmax(-1))
            out[:, step] = token
            done |= torch.isin(token, torch.tensor(stop_ids, dtype=torch.int64)) if stop_ids else done
            if not use_cache:  # recompute everything with the new token appended (checks the cache)
                tokens = torch.cat([tokens, token[:, None]], dim=1)
                grown = {**batch, "tokens": tokens,
                         "token_mask": torch.cat([batch["token_mask"], torch.ones(b, step + 1, dtype=torch.bool)], 1),
                         "ar": torch.cat([batch["ar"], torch.ones(b, step + 1, dtype=torch.bool)], 1)}
                hidden, _, grown_valid, _, _ = self.run_backbone(_compact(grown))
                next_logits = hidden[torch.arange(b), grown_valid.long().cumsum(1).argmax(1)] @ self.embed.weight.T
                continue
            h = self.embed(token)[:, None] * self.config.width**0.5
            visible = torch.cat([visible, torch.ones(b, 1, dtype=torch.bool)], dim=1)
            for index, layer in enumerate(self.layers):
                q, k, v = self._split(layer, layer.norm(h))
                q = rotary(q, position[:, None], self.config.rope_theta)
                k = rotary(k, position[:, None], self.config.rope_theta)
                keys[index] = torch.cat([keys[index], k], dim=2)
                values[index] = torch.cat([values[index], v], dim=2)
                h = h + layer.o(self._attend(q, keys[index], values[index], visible[:, None, :]))
                h = h + layer.mlp(layer.mlp_norm(h))
            next_logits = self.final_norm(h)[:, 0] @ self.embed.weight.T
            position = position + 1
        return out

    def backbone_parameters(self):
        for module in (self.vision, self.projector, self.embed, self.layers, self.final_norm):
            yield from module.parameters()

    def expert_parameters(self):
        for module in (self.expert_layers, self.expert_final_norm, self.action_in, self.action_out, self.time_mlp):
            yield from module.parameters()


def _compact(batch: dict) -> dict:
    """Moves each row's padding after its generated tokens (left-aligns real tokens)."""
    order = torch.argsort((~batch["token_mask"]).long(), dim=1, stable=True)
    return {**batch, **{key: torch.gather(batch[key], 1, order) for key in ("tokens", "token_mask", "ar")}}
