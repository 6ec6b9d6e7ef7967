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
import torch.utils.checkpoint
from torch import nn

from kidata.model.attention import attend, attention_bias, compute_dtype
from kidata.model.config import ModelConfig
from kidata.model.layers import AdaRMSNorm, GeGLU, RMSNorm, VisionTower, gated_norm, gated_residual, rotary, timestep_embedding
from kidata.model.lora import apply_lora
from kidata.schema import Batch


def sample_flow_inputs(shape: tuple[int, ...], generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow-matching noise [B, H, A] ~ N(0, 1) and time [B] ~ Beta(1.5, 1) scaled into
    [0.001, 1] (openpi's convention); Beta(1.5, 1) by inversion of its CDF t^1.5."""
    noise = torch.randn(shape, generator=generator)
    uniform = torch.rand(shape[0], generator=generator)
    return noise, uniform.pow(1 / 1.5) * 0.999 + 0.001


class _Layer(nn.Module):
    """One stream's weights in one layer: attention projections, MLP and their norms. Both
    streams use the same heads and head dim, so their attention can be joined."""

    def __init__(self, c: ModelConfig, width: int, mlp: int, norm) -> None:
        super().__init__()
        self.norm, self.mlp_norm = norm(), norm()
        self.q = nn.Linear(width, c.heads * c.head_dim, bias=False)
        self.k = nn.Linear(width, c.kv_heads * c.head_dim, bias=False)
        self.v = nn.Linear(width, c.kv_heads * c.head_dim, bias=False)
        self.o = nn.Linear(c.heads * c.head_dim, width, bias=False)
        self.mlp = GeGLU(width, mlp)
        self.heads, self.kv_heads, self.head_dim, self.rope_theta = c.heads, c.kv_heads, c.head_dim, c.rope_theta

    def project(self, h: torch.Tensor, cond: torch.Tensor | None, positions: torch.Tensor):
        """Pre-attention norm and rotary q [B, heads, L, hd], k, v [B, kv_heads, L, hd], and the
        residual gate (adaptive norms) or None. A method of the layer, so that FSDP2 (which
        hooks a module's calls) gathers this layer's weights for it."""
        normed, gate = gated_norm(self.norm, h, cond)
        q = self.q(normed).unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)
        k = self.k(normed).unflatten(-1, (self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v(normed).unflatten(-1, (self.kv_heads, self.head_dim)).transpose(1, 2)
        return rotary(q, positions, self.rope_theta), rotary(k, positions, self.rope_theta), v, gate

    def finish(self, h: torch.Tensor, attended: torch.Tensor, gate: torch.Tensor | None,
               cond: torch.Tensor | None) -> torch.Tensor:
        """Output projection, residual, MLP and residual."""
        h = gated_residual(h, self.o(attended), gate)
        normed, gate = gated_norm(self.mlp_norm, h, cond)
        return gated_residual(h, self.mlp(normed), gate)


def _expert_norm(c: ModelConfig):
    if c.time_conditioning == "adarms":
        return lambda: AdaRMSNorm(c.expert_width, c.expert_width)
    return lambda: RMSNorm(c.expert_width)


class KIModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = self.config = config
        self.activation_checkpointing = False  # recompute each layer in backward (trainer option)
        self.vision = VisionTower(c.image_size, c.patch_size, c.vision_width, c.vision_depth, c.vision_heads, c.vision_mlp,
                                  c.vision_stem)
        self.projector = nn.Linear(c.vision_width, c.width)
        self.embed = nn.Embedding(c.vocab_size, c.width)
        nn.init.normal_(self.embed.weight, std=0.02)  # Gemma's initializer range; N(0, 1) would give huge tied logits
        self.layers = nn.ModuleList(_Layer(c, c.width, c.mlp, lambda: RMSNorm(c.width)) for _ in range(c.depth))
        self.final_norm = RMSNorm(c.width)
        if c.state_input == "prefix":
            self.state_proj = nn.Linear(c.state_dim, c.width)
        if c.has_expert:
            self.expert_layers = nn.ModuleList(_Layer(c, c.expert_width, c.expert_mlp, _expert_norm(c))
                                               for _ in range(c.depth))
            self.expert_final_norm = _expert_norm(c)()
            self.action_in = nn.Linear(c.action_dim, c.expert_width)
            self.action_out = nn.Linear(c.expert_width, c.action_dim)
            if c.time_conditioning == "adarms":
                self.time_mlp_in = nn.Linear(c.expert_width, c.expert_width)
                self.time_mlp_out = nn.Linear(c.expert_width, c.expert_width)
            else:
                self.action_time_mlp_in = nn.Linear(2 * c.expert_width, c.expert_width)
                self.action_time_mlp_out = nn.Linear(c.expert_width, c.expert_width)
            if c.state_input == "expert":
                self.state_proj = nn.Linear(c.state_dim, c.expert_width)
        apply_lora(self, c.lora)  # adapters when configured, and which weights train (frozen: not the backbone)

    # ------------------------------------------------------------------ inputs
    def backbone_inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Embeddings [B, Lb, W], valid [B, Lb], causal-block flags [B, Lb], index of the first
        text token. Order: image tokens per camera, the state token (``state_input='prefix'``),
        text tokens. The prefix is bidirectional, so the state token's place only sets its
        position id."""
        images = batch["images"]
        b, n = images.shape[:2]
        patches = self.projector(self.vision(images.flatten(0, 1))).unflatten(0, (b, n))  # [B, N, P, W]
        parts = [patches.flatten(1, 2)]
        valid = [batch["image_mask"][:, :, None].expand(b, n, patches.shape[2]).flatten(1)]
        if self.config.state_input == "prefix":
            parts.append(self.state_proj(batch["state"])[:, None])
            valid.append(batch["state_dim_mask"].any(dim=1, keepdim=True))
        text_start = sum(part.shape[1] for part in parts)
        parts.append(self.embed(batch["tokens"]) * self.config.width**0.5)
        valid.append(batch["token_mask"])
        valid = torch.cat(valid, dim=1)
        ar = torch.cat([torch.zeros(b, text_start, dtype=torch.bool, device=valid.device),
                        batch["ar"] & batch["token_mask"]], dim=1)
        return torch.cat(parts, dim=1), valid, ar, text_start

    def expert_inputs(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict):
        """Expert embeddings [B, He, We], time conditioning [B, We] (adaRMS) or None, and the
        expert's own attention mask [B, He, He] (a pi0 state token does not see the actions)."""
        c = self.config
        time = timestep_embedding(t, c.expert_width)
        h = self.action_in(noisy)
        if c.time_conditioning == "adarms":
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time))))
        else:
            fused = torch.cat([h, time[:, None].expand_as(h)], dim=-1)
            h, cond = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused))), None
        blocks = torch.ones(h.shape[1], dtype=torch.long, device=h.device)
        if c.state_input == "expert":
            h = torch.cat([self.state_proj(batch["state"])[:, None], h], dim=1)
            blocks = torch.cat([blocks.new_zeros(1), blocks])
        own = (blocks[None, :] <= blocks[:, None])[None].expand(h.shape[0], -1, -1)
        return h, cond, own

    @staticmethod
    def backbone_mask(valid: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
        """bool [B, Lb, Lb]: i sees j when j's causal block is not after i's (openpi's rule)."""
        blocks = torch.cumsum(ar.long(), dim=1)
        return (blocks[:, None, :] <= blocks[:, :, None]) & valid[:, None, :] & valid[:, :, None]

    @staticmethod
    def prefix_visible(valid: torch.Tensor, ar: torch.Tensor, batch: dict | None = None) -> torch.Tensor:
        """bool [B, Lb]: the tokens expert tokens may see: the valid prefix, and with the batch's
        ``expert_context`` [B] (text tokens from the first) a subtask row's subtask text before
        its actions, in training and at inference alike (pi0.5); never action tokens."""
        context = None if batch is None else batch.get("expert_context")
        if context is None:
            return valid & (torch.cumsum(ar.long(), dim=1) == 0)
        text_start = valid.shape[1] - batch["tokens"].shape[1]  # text tokens come last
        index = torch.arange(valid.shape[1], device=valid.device)
        return valid & (index[None] < text_start + context[:, None])

    # ------------------------------------------------------------------ attention
    def _expert_attend(self, layer, h, cond, projected, prefix_kv, expert_bias):
        """``projected``: the expert layer's ``project`` output (q, k, v, residual gate)."""
        q, k, v, gate = projected
        prefix_k, prefix_v = prefix_kv
        if self.config.stop_gradient:  # knowledge insulation: no gradient into the backbone's keys/values
            prefix_k, prefix_v = prefix_k.detach(), prefix_v.detach()
        attended = attend(q, torch.cat([prefix_k, k], dim=2), torch.cat([prefix_v, v], dim=2), expert_bias)
        return layer.finish(h, attended, gate, cond)

    @staticmethod
    def expert_bias(prefix_visible: torch.Tensor, own: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Additive bias [B, 1, He, Lb + He] of the expert's queries over [prefix keys, expert keys],
        built once per pass and shared by every expert layer."""
        visible = torch.cat([prefix_visible[:, None, :].expand(-1, own.shape[1], -1), own], dim=2)
        return attention_bias(visible, dtype)

    def _expert_positions(self, prefix_visible: torch.Tensor, length: int) -> torch.Tensor:
        start = prefix_visible.sum(dim=1, keepdim=True)  # expert positions continue after the prefix
        return start + torch.arange(length, device=prefix_visible.device)[None]

    def _joint_layer(self, index, h, e, cond, positions, expert_positions, bias, expert_bias):
        """One layer of both streams (training): backbone keys/values feed the expert's attention
        (detached under ``ki``); under ``hybrid`` the expert's feed the targets'. Biases: built once per pass."""
        layer = self.layers[index]
        q, k, v, _ = layer.project(h, None, positions)
        if e is None:
            return layer.finish(h, attend(q, k, v, bias), None, None), None
        expert_layer = self.expert_layers[index]
        expert_qkv = expert_layer.project(e, cond, expert_positions)
        keys, values = (k, v)
        if self.config.targets_see_actions:
            keys, values = torch.cat([k, expert_qkv[1]], 2), torch.cat([v, expert_qkv[2]], 2)
        e = self._expert_attend(expert_layer, e, cond, expert_qkv, (k, v), expert_bias)
        return layer.finish(h, attend(q, keys, values, bias), None, None), e

    # ------------------------------------------------------------------ passes
    def run_backbone(self, batch: dict):
        """Backbone alone (inference): hidden states [B, Lb, W], per-layer (k, v), valid, ar and
        the index of the first text token."""
        embeddings, valid, ar, text_start = self.backbone_inputs(batch)
        positions = torch.cumsum(valid.long(), dim=1) - 1
        bias = attention_bias(self.backbone_mask(valid, ar), compute_dtype(embeddings))
        h, cache = embeddings, []
        for layer in self.layers:
            q, k, v, _ = layer.project(h, None, positions)
            h = layer.finish(h, attend(q, k, v, bias), None, None)
            cache.append((k, v))
        return self.final_norm(h), cache, valid, ar, text_start

    def run_expert(self, noisy: torch.Tensor, t: torch.Tensor, batch: dict, cache, valid, ar) -> torch.Tensor:
        """Velocity [B, H, A] of noisy actions at time t, attending to the prefix in ``cache``."""
        h, cond, own = self.expert_inputs(noisy, t, batch)
        prefix_visible = self.prefix_visible(valid, ar, batch)
        positions = self._expert_positions(prefix_visible, h.shape[1])
        bias = self.expert_bias(prefix_visible, own, compute_dtype(h))
        for layer, kv in zip(self.expert_layers, cache):
            qkv = layer.project(h, cond, positions)
            h = self._expert_attend(layer, h, cond, qkv, kv, bias)
        normed, _ = gated_norm(self.expert_final_norm, h, cond)
        return self.action_out(normed[:, -noisy.shape[1]:])

    def forward(self, batch: Batch, *, noise: torch.Tensor | None = None, t: torch.Tensor | None = None,
                all_logits: bool = False) -> dict:
        """Losses (token cross-entropy on loss-masked tokens, flow MSE) and outputs for a batch.

        Both streams advance layer by layer together: each layer's backbone keys/values feed the
        expert's attention in the same layer (and, for ``hybrid``, the expert's feed the targets').

        ``out["logits"]`` [N, V]: the logits predicting each loss-masked target (N targets after
        the first token, row-major), the only places the LM head runs;
        ``all_logits=True``: [B, T, V] at every text position (probes of what each position sees)."""
        c = self.config
        h, valid, ar, text_start = self.backbone_inputs(batch)
        positions = torch.cumsum(valid.long(), dim=1) - 1
        mask = self.backbone_mask(valid, ar)
        dtype = compute_dtype(h)
        out: dict = {}
        if c.has_expert:
            actions = batch["actions"].float()  # the flow (time, noise, x_t, target, loss) in fp32, whatever
            if noise is None or t is None:      # the compute dtype: t = 0.9 would be 0.898 in bf16
                drawn_noise, drawn_t = sample_flow_inputs(tuple(actions.shape))
                noise = drawn_noise.to(actions) if noise is None else noise
                t = drawn_t.to(actions) if t is None else t
            noise, t = noise.float(), t.float()
            noisy = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
            e, cond, own = self.expert_inputs(noisy, t, batch)
            prefix_visible = self.prefix_visible(valid, ar, batch)
            expert_positions = self._expert_positions(prefix_visible, e.shape[1])
            expert_bias = self.expert_bias(prefix_visible, own, dtype)
            if c.targets_see_actions:  # hybrid: target tokens of robot rows also see the expert tokens
                sees = valid & ~prefix_visible & batch["has_actions"][:, None]
                mask = torch.cat([mask, sees[:, :, None].expand(-1, -1, e.shape[1])], dim=2)
        else:
            e = cond = expert_positions = expert_bias = None
        bias = attention_bias(mask, dtype)  # once for all layers
        for index in range(c.depth):
            args = (index, h, e, cond, positions, expert_positions, bias, expert_bias)
            if self.activation_checkpointing and self.training:
                h, e = torch.utils.checkpoint.checkpoint(self._joint_layer, *args, use_reentrant=False)
            else:
                h, e = self._joint_layer(*args)
        # no token loss in the objective (pi0, frozen): the cross-entropy is a diagnostic, kept out of autograd
        with torch.set_grad_enabled(torch.is_grad_enabled() and c.fast_loss):
            out.update(self._token_loss(h[:, text_start:], batch, all_logits))
        loss = out["fast_loss"] if c.fast_loss else out["fast_loss"].new_zeros(())
        if c.has_expert:
            normed, _ = gated_norm(self.expert_final_norm, e, cond)
            # a new fp32 tensor, not a view: FSDP2 hooks backward on the root's outputs, and an in-place
            # op on a returned view would bypass that hook
            velocity = self.action_out(normed[:, -actions.shape[1]:]).to(torch.float32, copy=True)
            weight = (batch["action_valid"][:, :, None] & batch["action_dim_mask"][:, None, :]
                      & batch["has_actions"][:, None, None]).float()
            flow = (((velocity - (noise - actions)) ** 2) * weight).sum() / weight.sum().clamp(min=1)
            loss = loss + c.flow_weight * flow
            out.update(flow_loss=flow, velocity=velocity)
        out["loss"] = loss
        return out

    def _token_loss(self, text_hidden: torch.Tensor, batch: Batch, all_logits: bool) -> dict:
        """Mean cross-entropy of the loss-masked targets and their logits, from the backbone's
        hidden states at the text positions [B, T, W]; position i predicts token i + 1. The
        vocabulary-sized logits exist only for the N targets (N is read once from the device)."""
        index = batch.get("loss_targets")  # flat indices of the targets in [B, T - 1], found on the host by collate
        if index is None:  # a batch not cut by collate (a test's, a caller's): found here, one read from the device
            index = batch["loss"][:, 1:].reshape(-1).nonzero().squeeze(1)
        wanted = batch["tokens"][:, 1:].reshape(-1).index_select(0, index)
        if all_logits:
            logits = self.lm_head(self.final_norm(text_hidden))  # [B, T, V]
            predicting = logits[:, :-1].reshape(-1, logits.shape[-1]).index_select(0, index)
        else:
            hidden = text_hidden[:, :-1].reshape(-1, text_hidden.shape[-1]).index_select(0, index)
            predicting = logits = self.lm_head(self.final_norm(hidden))  # [N, V]
        ce = F.cross_entropy(predicting.float(), wanted, reduction="sum") / max(index.shape[0], 1)
        return {"fast_loss": ce, "logits": logits}

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits [..., V] of final-normed hidden states [..., W] (tied embeddings, as Gemma)."""
        return hidden @ self.embed.weight.T

    @torch.no_grad()
    def sample_actions(self, batch: Batch, *, num_steps: int = 10, noise: torch.Tensor | None = None,
                       use_cache: bool = True) -> torch.Tensor:
        """Euler integration of the expert from t = 1 to 0; the prefix runs once (KV cache).

        ``batch`` holds only the prefix (no FAST tokens). ``use_cache=False`` recomputes the
        backbone every step (for checking the cache)."""
        if not self.config.has_expert:
            raise ValueError(f"{self.config.variant} has no action expert: decode actions with generate() and the "
                             "FAST tokenizer (pi0_fast)")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            # zero or negative steps would skip the integration and return the starting noise as actions
            raise ValueError(f"num_steps must be a whole number >= 1 (Euler steps from t = 1 to 0), got {num_steps!r}")
        b = batch["tokens"].shape[0]
        device = batch["tokens"].device
        shape = (b, self.config.action_horizon, self.config.action_dim)
        x = torch.randn(shape, device=device) if noise is None else noise.clone()
        _, cache, valid, ar, _ = self.run_backbone(batch)
        dt = -1.0 / num_steps
        for step in range(num_steps):
            t = torch.full((b,), 1.0 + step * dt, device=device)
            if not use_cache:
                _, cache, valid, ar, _ = self.run_backbone(batch)
            x = x + dt * self.run_expert(x, t, batch, cache, valid, ar)
        return x

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int, *, stop_ids: tuple[int, ...] = (), use_cache: bool = True,
                 return_logits: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Greedy decoding after the prefix (text answers, or FAST tokens on the pi0-FAST path).

        ``batch`` holds only the prefix, left-aligned (padding after it). Returns int64
        [B, max_new_tokens]; rows stop after a token in ``stop_ids`` (EOS, "|") and are padded
        with that token. Decoding ends as soon as every row has stopped (the padding is what
        further steps would have written), and the last token is never fed back: at most
        ``max_new_tokens - 1`` decoder passes after the prefix's. The prefix keys/values are
        computed once and grown by one per step. ``return_logits`` also returns each decoded
        step's next-token logits float [B, steps, V] (what the cache is checked by: logits, not
        only their argmax)."""
        b = batch["tokens"].shape[0]
        device = batch["tokens"].device
        hidden, cache, valid, ar, _ = self.run_backbone(batch)
        last = valid.long().cumsum(dim=1).argmax(dim=1)  # index of each row's last real token
        next_logits = self.lm_head(hidden[torch.arange(b), last])
        position = valid.long().sum(dim=1)  # next position to fill
        keys = [k for k, _ in cache]
        values = [v for _, v in cache]
        visible = valid.clone()
        out = torch.zeros(b, max_new_tokens, dtype=torch.int64, device=device)
        done = torch.zeros(b, dtype=torch.bool, device=device)
        stop = torch.tensor(stop_ids, dtype=torch.int64, device=device)
        tokens = batch["tokens"]
        steps_logits = []
        for step in range(max_new_tokens):
            steps_logits.append(next_logits)
            token = torch.where(done, out[:, step - 1] if step else next_logits.argmax(-1), next_logits.argmax(-1))
            out[:, step] = token
            done |= torch.isin(token, stop)
            if step + 1 == max_new_tokens or bool(done.all()):
                out[:, step + 1:] = token[:, None]  # every row stopped: the rest is its stop token
                break
            if not use_cache:  # recompute everything with the new token appended (checks the cache)
                tokens = torch.cat([tokens, token[:, None]], dim=1)
                grown = {**batch, "tokens": tokens,
                         "token_mask": torch.cat([batch["token_mask"], torch.ones(b, step + 1, dtype=torch.bool, device=device)], 1),
                         "ar": torch.cat([batch["ar"], torch.ones(b, step + 1, dtype=torch.bool, device=device)], 1)}
                hidden, _, grown_valid, _, _ = self.run_backbone(_compact(grown))
                next_logits = self.lm_head(hidden[torch.arange(b), grown_valid.long().cumsum(1).argmax(1)])
                continue
            h = self.embed(token)[:, None] * self.config.width**0.5
            visible = torch.cat([visible, torch.ones(b, 1, dtype=torch.bool, device=device)], dim=1)
            bias = attention_bias(visible[:, None, :], compute_dtype(h))  # once per step, for all layers
            for index, layer in enumerate(self.layers):
                q, k, v, _ = layer.project(h, None, position[:, None])
                keys[index] = torch.cat([keys[index], k], dim=2)
                values[index] = torch.cat([values[index], v], dim=2)
                h = layer.finish(h, attend(q, keys[index], values[index], bias), None, None)
            next_logits = self.lm_head(self.final_norm(h)[:, 0])
            position = position + 1
        return (out, torch.stack(steps_logits, dim=1)) if return_logits else out

    def part_modules(self) -> dict[str, list[nn.Module]]:
        """The model's parts (for counts, freezing and optimizer groups)."""
        c = self.config
        parts = {"vision": [self.vision], "projector": [self.projector], "embedding": [self.embed],
                 "decoder": [self.layers, self.final_norm]}
        if c.state_input == "prefix":
            # new to a pretrained VLM backbone: loaded only from a kidata robot run that trained it; trained under every variant
            parts["state_input"] = [self.state_proj]
        if c.has_expert:
            time = (["time_mlp_in", "time_mlp_out"] if c.time_conditioning == "adarms"
                    else ["action_time_mlp_in", "action_time_mlp_out"])
            parts["expert"] = ([self.expert_layers, self.expert_final_norm, self.action_in, self.action_out]
                               + [getattr(self, name) for name in time]
                               + ([self.state_proj] if c.state_input == "expert" else []))
        return parts

    def backbone_parameters(self):
        for name in ("vision", "projector", "embedding", "decoder"):
            for module in self.part_modules()[name]:
                yield from module.parameters()

    def expert_parameters(self):
        for module in self.part_modules().get("expert", []):
            yield from module.parameters()


def _compact(batch: dict) -> dict:
    """Moves each row's padding after its generated tokens (left-aligns real tokens)."""
    order = torch.argsort((~batch["token_mask"]).long(), dim=1, stable=True)
    return {**batch, **{key: torch.gather(batch[key], 1, order) for key in ("tokens", "token_mask", "ar")}}
