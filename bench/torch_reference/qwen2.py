"""Qwen2 decoder for the PyTorch peer, written the way the Hugging Face eager implementation computes it:
RMSNorm in float32 then cast back, rotate-half RoPE with cos/sin computed in float32, grouped-query attention
with the key/value heads repeated, float32 softmax, SwiGLU MLP. Weights are the checkpoint's tensors
(memory-mapped views when the compute dtype is the stored one), with a KV cache for decoding."""
import torch
import torch.nn.functional as F


class KVCache:
    def __init__(self, layers, kv_heads, head_dim, capacity, dtype):
        self.k = [torch.empty(kv_heads, capacity, head_dim, dtype=dtype) for _ in range(layers)]
        self.v = [torch.empty(kv_heads, capacity, head_dim, dtype=dtype) for _ in range(layers)]
        self.length = 0
        self.capacity = capacity


class Qwen2:
    def __init__(self, tensors, config, dtype):
        self.dtype = dtype
        self.hidden = config["hidden_size"]
        self.heads = config["num_attention_heads"]
        self.kv_heads = config["num_key_value_heads"]
        self.head_dim = self.hidden // self.heads
        self.eps = config["rms_norm_eps"]
        self.n_layers = config["num_hidden_layers"]

        def w(name):
            t = tensors.get(name)
            return t if t.dtype == dtype else t.to(dtype)

        # The embedding table stays in its stored dtype: only looked-up rows are converted.
        self.embed_tokens = tensors.get("model.embed_tokens.weight")
        self.layers = []
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            self.layers.append({name: w(p + name) for name in (
                "input_layernorm.weight", "post_attention_layernorm.weight",
                "self_attn.q_proj.weight", "self_attn.q_proj.bias", "self_attn.k_proj.weight", "self_attn.k_proj.bias",
                "self_attn.v_proj.weight", "self_attn.v_proj.bias", "self_attn.o_proj.weight",
                "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight")})
        self.norm = w("model.norm.weight")
        tied = config.get("tie_word_embeddings", False) or "lm_head.weight" not in tensors
        self.lm_head = w("model.embed_tokens.weight" if tied else "lm_head.weight")
        theta = float(config.get("rope_theta", (config.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
        self.inv_freq = 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))

    def new_cache(self, capacity):
        return KVCache(self.n_layers, self.kv_heads, self.head_dim, capacity, self.dtype)

    def embed(self, ids):
        return self.embed_tokens[torch.as_tensor(ids, dtype=torch.long)].to(self.dtype)

    def _rms_norm(self, x, weight):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x32.to(self.dtype)

    def _rope(self, positions):
        freqs = positions.float()[:, None] * self.inv_freq[None, :]
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos().to(self.dtype), angles.sin().to(self.dtype)

    @staticmethod
    def _rotate(x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    @staticmethod
    def _repeat_kv(x, group):
        """[kv_heads, L, d] -> [kv_heads * group, L, d], each key/value head serving `group` query heads."""
        kv_heads, length, dim = x.shape
        return x[:, None].expand(kv_heads, group, length, dim).reshape(kv_heads * group, length, dim)

    def _attention(self, layer, x, cache, li, cos, sin):
        t = x.shape[0]
        start = cache.length
        q = F.linear(x, layer["self_attn.q_proj.weight"], layer["self_attn.q_proj.bias"])
        k = F.linear(x, layer["self_attn.k_proj.weight"], layer["self_attn.k_proj.bias"])
        v = F.linear(x, layer["self_attn.v_proj.weight"], layer["self_attn.v_proj.bias"])
        q = self._rotate(q.view(t, self.heads, self.head_dim).transpose(0, 1), cos, sin)
        k = self._rotate(k.view(t, self.kv_heads, self.head_dim).transpose(0, 1), cos, sin)
        v = v.view(t, self.kv_heads, self.head_dim).transpose(0, 1)
        cache.k[li][:, start:start + t] = k
        cache.v[li][:, start:start + t] = v
        end = start + t
        group = self.heads // self.kv_heads
        keys = self._repeat_kv(cache.k[li][:, :end], group)
        values = self._repeat_kv(cache.v[li][:, :end], group)
        scores = (q @ keys.transpose(1, 2)) * self.head_dim ** -0.5  # [heads, t, end]
        if t > 1:
            # Query i sits at position start + i and sees keys 0 .. start + i.
            mask = torch.ones(t, end, dtype=torch.bool).triu(start + 1)
            scores = scores.masked_fill(mask, float("-inf"))
        probs = scores.float().softmax(dim=-1).to(self.dtype)
        out = (probs @ values).transpose(0, 1).reshape(t, self.hidden)
        return F.linear(out, layer["self_attn.o_proj.weight"])

    @staticmethod
    def _mlp(layer, x):
        gate = F.linear(x, layer["mlp.gate_proj.weight"])
        up = F.linear(x, layer["mlp.up_proj.weight"])
        return F.linear(F.silu(gate) * up, layer["mlp.down_proj.weight"])

    def forward(self, embeds, cache, hidden_states=None):
        """Runs `embeds` [T, hidden] at positions cache.length.. and returns the logits of the last position.
        With `hidden_states` (a dict), records the residual stream after every layer and the final norm."""
        t = embeds.shape[0]
        if cache.length + t > cache.capacity:
            raise ValueError(f"KV cache holds {cache.capacity} positions; {cache.length} + {t} do not fit")
        cos, sin = self._rope(torch.arange(cache.length, cache.length + t))
        x = embeds.to(self.dtype)
        for li, layer in enumerate(self.layers):
            x = x + self._attention(layer, self._rms_norm(x, layer["input_layernorm.weight"]), cache, li, cos, sin)
            x = x + self._mlp(layer, self._rms_norm(x, layer["post_attention_layernorm.weight"]))
            if hidden_states is not None:
                hidden_states[f"llm.hidden.{li}"] = x
        cache.length += t
        if hidden_states is not None:
            hidden_states["llm.final_norm"] = self._rms_norm(x, self.norm)
        last = self._rms_norm(x[-1:], self.norm)
        return F.linear(last, self.lm_head)[0].float()
