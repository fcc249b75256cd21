"""FastViTHD, the FastVLM vision tower, in inference (re-parameterised) form, written for the PyTorch peer.

The module tree mirrors the checkpoint's tensor names under `model.vision_tower.vision_tower.model.`, so
`load_state_dict(strict=True)` proves that every tensor is used and has the shape this code expects. The
structure follows the facts in the apple/ml-fastvlm `mobileclip/mci.py` definition (commit 592b4ad):

  patch_embed  3x3 s2 conv -> GELU -> 3x3 s2 depthwise -> GELU -> 1x1 -> GELU          (stride 4)
  network      per stage i: [RepCPE if pos_embs[i]] blocks(i) [PatchEmbed to stage i+1]
                 RepMixer block:  x = dw3x3(x);  x = x + ls * ConvFFN(x)
                 attention block: x = x + ls1 * MHSA(LayerNormChannel(x));  x = x + ls2 * ConvFFN(x)
                 ConvFFN: dw7x7 (no bias) -> BatchNorm (running stats) -> 1x1 C->rC -> GELU -> 1x1 rC->C
                 RepCPE: dw7x7 with bias (the skip is folded into the kernel)
                 PatchEmbed: 7x7 s2 conv, groups = in channels, -> GELU -> 1x1 -> GELU
  conv_exp     3x3 conv, groups = last dim, C -> cls_ratio*C -> squeeze-excite -> GELU

GELU is the exact (erf) form everywhere.
"""
import re

import torch
import torch.nn.functional as F
from torch import nn

STOCK = dict(layers=[2, 12, 24, 4, 2], embed_dims=[96, 192, 384, 768, 1536], mlp_ratios=[4, 4, 4, 4, 4],
             downsamples=[True] * 5, token_mixers=["repmixer"] * 3 + ["attention"] * 2,
             pos_embs=[None, None, None, 7, 7], cls_ratio=2.0, down_patch_size=7, down_stride=2,
             repmixer_kernel_size=3)
HEAD_DIM = 32
PREFIX = "model.vision_tower.vision_tower.model."


def _param(*shape):
    # Uninitialised: every parameter is overwritten by load_state_dict.
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class Conv(nn.Module):
    """A re-parameterised convolution: 'same' padding (k // 2), optional bias."""

    def __init__(self, cin, cout, k, stride=1, groups=1, bias=True):
        super().__init__()
        self.weight = _param(cout, cin // groups, k, k)
        self.bias = _param(cout) if bias else None
        self.stride, self.padding, self.groups = stride, k // 2, groups

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)


class ConvGelu(nn.Module):
    """MobileOneBlock in inference mode without SE: GELU(conv(x)); the conv is named `reparam_conv`."""

    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__()
        self.reparam_conv = Conv(cin, cout, k, stride, groups)

    def forward(self, x):
        return F.gelu(self.reparam_conv(x))


class DepthwiseBN(nn.Module):
    """ConvFFN's token-mixing part: depthwise 7x7 without bias, then BatchNorm with running statistics."""

    def __init__(self, c):
        super().__init__()
        self.conv = Conv(c, c, 7, groups=c, bias=False)
        self.bn = nn.BatchNorm2d(c, eps=1e-5)

    def forward(self, x):
        return self.bn(self.conv(x))


class ConvFFN(nn.Module):
    def __init__(self, c, hidden):
        super().__init__()
        self.conv = DepthwiseBN(c)
        self.fc1 = Conv(c, hidden, 1)
        self.fc2 = Conv(hidden, c, 1)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(self.conv(x))))


class ReparamMixer(nn.Module):
    """RepMixer after re-parameterisation: one depthwise conv with bias (identity and scale folded in)."""

    def __init__(self, c, k):
        super().__init__()
        self.reparam_conv = Conv(c, c, k, groups=c)

    def forward(self, x):
        return self.reparam_conv(x)


class RepMixerBlock(nn.Module):
    def __init__(self, c, mlp_ratio, k):
        super().__init__()
        self.token_mixer = ReparamMixer(c, k)
        self.convffn = ConvFFN(c, int(c * mlp_ratio))
        self.layer_scale = _param(c, 1, 1)

    def forward(self, x):
        x = self.token_mixer(x)
        return x + self.layer_scale * self.convffn(x)


class LayerNormChannel(nn.Module):
    """LayerNorm over the channel axis of NCHW (biased variance, eps 1e-5)."""

    def __init__(self, c):
        super().__init__()
        self.weight = _param(c)
        self.bias = _param(c)

    def forward(self, x):
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-5)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MHSA(nn.Module):
    """Multi-head self-attention over all H*W positions; head_dim 32; qkv without bias, proj with bias."""

    def __init__(self, c):
        super().__init__()
        self.heads = c // HEAD_DIM
        self.qkv = nn.Linear(c, 3 * c, bias=False)
        self.proj = nn.Linear(c, c)

    def forward(self, x):
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, N, C]
        qkv = self.qkv(tokens).reshape(b, h * w, 3, self.heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [B, heads, N, head_dim]
        attn = ((q * HEAD_DIM ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = self.proj((attn @ v).transpose(1, 2).reshape(b, h * w, c))
        return out.transpose(1, 2).reshape(b, c, h, w)


class AttentionBlock(nn.Module):
    def __init__(self, c, mlp_ratio):
        super().__init__()
        self.norm = LayerNormChannel(c)
        self.token_mixer = MHSA(c)
        self.convffn = ConvFFN(c, int(c * mlp_ratio))
        self.layer_scale_1 = _param(c, 1, 1)
        self.layer_scale_2 = _param(c, 1, 1)

    def forward(self, x):
        x = x + self.layer_scale_1 * self.token_mixer(self.norm(x))
        return x + self.layer_scale_2 * self.convffn(x)


class RepCPE(nn.Module):
    """Conditional positional encoding, re-parameterised: depthwise conv with bias, skip folded in."""

    def __init__(self, c, k):
        super().__init__()
        self.reparam_conv = Conv(c, c, k, groups=c)

    def forward(self, x):
        return self.reparam_conv(x)


class LargeKernelGelu(nn.Module):
    """ReparamLargeKernelConv in inference mode: GELU(conv(x)), the conv named `lkb_reparam`."""

    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.lkb_reparam = Conv(cin, cout, k, stride, groups=cin)

    def forward(self, x):
        return F.gelu(self.lkb_reparam(x))


class PatchEmbed(nn.Module):
    def __init__(self, cin, cout, k, stride):
        super().__init__()
        self.proj = nn.Sequential(LargeKernelGelu(cin, cout, k, stride), ConvGelu(cout, cout, 1))

    def forward(self, x):
        return self.proj(x)


class SqueezeExcite(nn.Module):
    def __init__(self, c, rd_ratio=0.0625):
        super().__init__()
        self.reduce = Conv(c, int(c * rd_ratio), 1)
        self.expand = Conv(int(c * rd_ratio), c, 1)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class ConvExp(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.reparam_conv = Conv(cin, cout, 3, groups=cin)
        self.se = SqueezeExcite(cout)

    def forward(self, x):
        return F.gelu(self.se(self.reparam_conv(x)))


class FastViTHD(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["embed_dims"]
        self.patch_embed = nn.Sequential(ConvGelu(3, d[0], 3, stride=2), ConvGelu(d[0], d[0], 3, stride=2, groups=d[0]),
                                         ConvGelu(d[0], d[0], 1))
        network = []
        stages = len(cfg["layers"])
        for i in range(stages):
            if cfg["pos_embs"][i] is not None:
                network.append(RepCPE(d[i], cfg["pos_embs"][i]))
            if cfg["token_mixers"][i] == "repmixer":
                blocks = [RepMixerBlock(d[i], cfg["mlp_ratios"][i], cfg["repmixer_kernel_size"])
                          for _ in range(cfg["layers"][i])]
            elif cfg["token_mixers"][i] == "attention":
                blocks = [AttentionBlock(d[i], cfg["mlp_ratios"][i]) for _ in range(cfg["layers"][i])]
            else:
                raise ValueError(f"vision_config.token_mixers[{i}] is {cfg['token_mixers'][i]!r}: "
                                 "expected 'repmixer' or 'attention'")
            network.append(nn.Sequential(*blocks))
            if i + 1 < stages and (cfg["downsamples"][i] or d[i] != d[i + 1]):
                network.append(PatchEmbed(d[i], d[i + 1], cfg["down_patch_size"], cfg["down_stride"]))
        self.network = nn.ModuleList(network)
        self.conv_exp = ConvExp(d[-1], int(d[-1] * cfg["cls_ratio"]))

    def forward(self, pixels, intermediates=None):
        """pixels [B,3,S,S] -> image features [B, (S/64)^2, cls_ratio*C] in row-major token order."""
        x = self.patch_embed(pixels)
        if intermediates is not None:
            intermediates["vision.patch_embed"] = x
        for i, module in enumerate(self.network):
            x = module(x)
            if intermediates is not None:
                intermediates[f"vision.network.{i}"] = x
        x = self.conv_exp(x)
        if intermediates is not None:
            intermediates["vision.conv_exp"] = x
        return x.flatten(2).transpose(1, 2)


def vision_config(config):
    """The tower's hyper-parameters: `vision_config` when the checkpoint has one, stock FastViTHD otherwise."""
    cfg = dict(STOCK)
    for key, value in (config.get("vision_config") or {}).items():
        if key in cfg:
            cfg[key] = value
    if not isinstance(cfg["mlp_ratios"], list):
        cfg["mlp_ratios"] = [cfg["mlp_ratios"]] * len(cfg["layers"])
    return cfg


def image_size(config):
    """The input size is the number ending `mm_vision_tower` (mobileclip_l_1024 -> 1024)."""
    match = re.search(r"(\d+)$", config.get("mm_vision_tower", ""))
    if not match:
        raise ValueError(f"config.json mm_vision_tower {config.get('mm_vision_tower')!r} does not end in the image size")
    return int(match.group(1))


def load_fastvithd(tensors, config, dtype):
    """Builds the tower from a SafeTensors and converts it to `dtype` (BatchNorm statistics included)."""
    tower = FastViTHD(vision_config(config))
    # head.proj is MobileCLIP's pooled projection, unused by FastVLM (features are taken after conv_exp).
    state = {name[len(PREFIX):]: tensors.get(name) for name in tensors.keys()
             if name.startswith(PREFIX) and not name.startswith(PREFIX + "head.")}
    tower.load_state_dict(state, strict=True)
    return tower.to(dtype).eval()
