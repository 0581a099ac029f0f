"""Common mistakes and honest variants for chapter 5 (the decoder)."""

from . import Mistake, Variant

_LAYER_INIT = '''
class DecoderLayer(nn.Module):
    """decoder layer"""

    def __init__(self, d_model=512, num_heads=8, d_ff=2048, dropout=0.1, activation="relu",
                 norm_first=False, bias=True, layer_norm_eps=1e-5):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, bias=bias)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout, bias=bias)
        self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout, activation, bias)
        self.self_attn_block = Sublayer(d_model, dropout, norm_first, layer_norm_eps, bias)
        self.cross_attn_block = Sublayer(d_model, dropout, norm_first, layer_norm_eps, bias)
        self.ff_block = Sublayer(d_model, dropout, norm_first, layer_norm_eps, bias)

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None):
        """forward"""
'''

_STACK_INIT = '''
class Decoder(nn.Module):
    """decoder stack"""

    def __init__(self, layer, num_layers, final_norm=False):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        d_model = layer.self_attn.d_model
        self.norm = nn.LayerNorm(d_model) if final_norm else None

    def forward(self, x, memory, self_mask=None, memory_mask=None, cache=None):
        """forward"""
'''


def _layer(body: str) -> str:
    return _LAYER_INIT + body


def _stack(body: str) -> str:
    return _STACK_INIT + body


_CORRECT_SELF = '''\
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = self.self_attn_block(x, lambda y: self.self_attn(y, y, y, self_mask, cache=self_cache))
'''
_CORRECT_FF = '''\
        return self.ff_block(x, self.feed_forward)
'''

MISTAKES = [
    Mistake("causal_mask", "off by one: diagonal excluded", '''
def causal_mask(length, device=None):
    """mask"""
    return torch.ones(length, length, dtype=torch.bool, device=device).tril(-1)
''', "off by one"),
    Mistake("causal_mask", "upper triangle (inverted)", '''
def causal_mask(length, device=None):
    """mask"""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu()
''', "inverted or transposed"),
    Mistake("causal_mask", "float mask", '''
def causal_mask(length, device=None):
    """mask"""
    return torch.ones(length, length, device=device).tril()
''', "expected dtype torch.bool"),
    Mistake("target_mask", "no padding part", '''
def target_mask(tokens, pad_id=0):
    """mask"""
    return causal_mask(tokens.shape[1], tokens.device).expand(tokens.shape[0], 1, -1, -1)
''', "padding part is missing"),
    Mistake("target_mask", "no causal part", '''
def target_mask(tokens, pad_id=0):
    """mask"""
    return padding_mask(tokens, pad_id)
''', "causal part is missing"),
    Mistake("target_mask", "padding on the query axis", '''
def target_mask(tokens, pad_id=0):
    """mask"""
    return (tokens != pad_id)[:, None, :, None] & causal_mask(tokens.shape[1], tokens.device)
''', "not queries"),
    Mistake("DecoderLayer.forward", "cross-attention over the decoder's states", _layer(
        _CORRECT_SELF + '''\
        x = self.cross_attn_block(x, lambda y: self.cross_attn(y, y, y, memory_mask,
                                                               cache=cross_cache, static_kv=True))
''' + _CORRECT_FF), "from the encoder's `memory`"),
    Mistake("DecoderLayer.forward", "masks swapped", _layer('''\
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = self.self_attn_block(x, lambda y: self.self_attn(y, y, y, memory_mask, cache=self_cache))
        x = self.cross_attn_block(x, lambda y: self.cross_attn(y, memory, memory, self_mask,
                                                               cache=cross_cache, static_kv=True))
''' + _CORRECT_FF), "masks are swapped"),
    Mistake("DecoderLayer.forward", "no residual around the cross-attention", _layer(
        _CORRECT_SELF + '''\
        x = self.cross_attn(x, memory, memory, memory_mask, cache=cross_cache, static_kv=True)
''' + _CORRECT_FF), "cross-attention has no residual"),
    Mistake("DecoderLayer.forward", "feed-forward result dropped", _layer(
        _CORRECT_SELF + '''\
        x = self.cross_attn_block(x, lambda y: self.cross_attn(y, memory, memory, memory_mask,
                                                               cache=cross_cache, static_kv=True))
        self.ff_block(x, self.feed_forward)
        return x
'''), "feed-forward sublayer's result is lost"),
    Mistake("DecoderLayer.forward", "cache ignored by self-attention", _layer('''\
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = self.self_attn_block(x, lambda y: self.self_attn(y, y, y, self_mask))
        x = self.cross_attn_block(x, lambda y: self.cross_attn(y, memory, memory, memory_mask,
                                                               cache=cross_cache, static_kv=True))
''' + _CORRECT_FF), "first cache of the pair"),
    Mistake("DecoderLayer.forward", "cross-attention cache without static_kv", _layer(
        _CORRECT_SELF + '''\
        x = self.cross_attn_block(x, lambda y: self.cross_attn(y, memory, memory, memory_mask,
                                                               cache=cross_cache))
''' + _CORRECT_FF), None),
    Mistake("Decoder.forward", "final norm forgotten", _stack('''\
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, self_mask, memory_mask, cache[i] if cache is not None else None)
        return x
'''), "final norm"),
    Mistake("Decoder.forward", "every layer on the input", _stack('''\
        out = x
        for i, layer in enumerate(self.layers):
            out = layer(x, memory, self_mask, memory_mask, cache[i] if cache is not None else None)
        return self.norm(out) if self.norm is not None else out
'''), "previous layer's"),
    Mistake("Decoder.forward", "cache not passed", _stack('''\
        for layer in self.layers:
            x = layer(x, memory, self_mask, memory_mask)
        return self.norm(x) if self.norm is not None else x
'''), "its own cache pair"),
    Mistake("Decoder.forward", "same cache pair for every layer", _stack('''\
        for layer in self.layers:
            x = layer(x, memory, self_mask, memory_mask, cache[0] if cache is not None else None)
        return self.norm(x) if self.norm is not None else x
'''), "its own cache pair"),
]

VARIANTS = [
    Variant("causal_mask", "comparison of aranges", '''
def causal_mask(length, device=None):
    """mask"""
    i = torch.arange(length, device=device)
    return i[:, None] >= i[None, :]
'''),
    Variant("target_mask", "arange comparisons on the tokens' device, a warning", '''
import warnings
def target_mask(tokens, pad_id=0):
    """mask"""
    warnings.warn("written without causal_mask")
    t = tokens.shape[1]
    pos = torch.arange(t, device=tokens.device)
    causal = pos[None, :] <= pos[:, None]
    return (tokens != pad_id).unsqueeze(1).unsqueeze(2).logical_and(causal)
'''),
    Variant("DecoderLayer.forward", "named helper functions", _layer('''\
        self_cache = cross_cache = None
        if cache is not None:
            self_cache, cross_cache = cache

        def self_attention(y):
            return self.self_attn(y, y, y, mask=self_mask, cache=self_cache)

        def cross_attention(y):
            return self.cross_attn(y, memory, memory, mask=memory_mask, cache=cross_cache,
                                   static_kv=True)

        h = self.self_attn_block(x, self_attention)
        h = self.cross_attn_block(h, cross_attention)
        return self.ff_block(h, lambda y: self.feed_forward(y))
''')),
    Variant("Decoder.forward", "zip over the cache", _stack('''\
        caches = cache if cache is not None else [None] * len(self.layers)
        for layer, pair in zip(self.layers, caches):
            x = layer(x, memory, self_mask=self_mask, memory_mask=memory_mask, cache=pair)
        if self.norm is None:
            return x
        return self.norm(x)
''')),
]

# Devices and forbidden layers (issue 8).
MISTAKES += [
    Mistake("target_mask", "explicit loops on the CPU (any device lost)", '''
import warnings
def target_mask(tokens, pad_id=0):
    """mask"""
    warnings.warn("loops are slow")
    b, t = tokens.shape
    mask = torch.zeros(b, 1, t, t, dtype=torch.bool)
    for n in range(b):
        for i in range(t):
            for j in range(i + 1):
                mask[n, 0, i, j] = bool(tokens[n, j] != pad_id)
    return mask
''', None),
    Mistake("causal_mask", "device ignored", '''
def causal_mask(length, device=None):
    """mask"""
    return torch.ones(length, length).tril().bool()
''', "device"),
    Mistake("target_mask", "causal part made on the CPU", '''
def target_mask(tokens, pad_id=0):
    """mask"""
    return padding_mask(tokens, pad_id) & causal_mask(tokens.shape[1])
''', None),
    Mistake("DecoderLayer.forward", "calls PyTorch's nn.TransformerDecoderLayer (to compare)",
            _layer('''\
        Layer = getattr(nn, "TransformerDecoderLayer")
        _ = Layer(x.shape[-1], 1, 16, batch_first=True)(x, memory)
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = self.self_attn_block(x, lambda y: self.self_attn(y, y, y, self_mask,
                                                             cache=self_cache))
        x = self.cross_attn_block(x, lambda y: self.cross_attn(
            y, memory, memory, memory_mask, cache=cross_cache, static_kv=True))
        return self.ff_block(x, self.feed_forward)
'''), "torch.nn.TransformerDecoderLayer"),
    Mistake("Decoder.forward", "calls PyTorch's nn.TransformerDecoder (to compare)", _stack('''\
        torch_stack = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(x.shape[-1], 1, 16, batch_first=True), 1)
        _ = torch_stack(x, memory)
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, self_mask, memory_mask, cache[i] if cache is not None else None)
        return x if self.norm is None else self.norm(x)
'''), "torch.nn.TransformerDecoder"),
]

# Gaps found by the gap hunt: ids below pad_id, batch 1, lengths over 8, three layers, and the
# sublayers' dropout (eval mode with dropout > 0; training mode with p = 0.5).
_HAND_SUBLAYERS = '''\
        self_cache, cross_cache = cache if cache is not None else (None, None)

        def sub(block, fn, x):
            if block.norm_first:
                return x + {drop}(fn(block.norm(x)))
            return block.norm(x + {drop}(fn(x)))

        x = sub(self.self_attn_block,
                lambda y: self.self_attn(y, y, y, self_mask, cache=self_cache), x)
        x = sub(self.cross_attn_block, lambda y: self.cross_attn(
            y, memory, memory, memory_mask, cache=cross_cache, static_kv=True), x)
        return sub(self.ff_block, self.feed_forward, x)
'''

MISTAKES += [
    Mistake("causal_mask", "an 8 x 8 mask made once, sliced", '''
_CAUSAL = torch.ones(8, 8, dtype=torch.bool).tril()
def causal_mask(length, device=None):
    """mask"""
    return _CAUSAL[:length, :length].to(device or "cpu")
''', None),
    Mistake("target_mask", "padding found with tokens > pad_id", '''
def target_mask(tokens, pad_id=0):
    """mask"""
    return (tokens > pad_id)[:, None, None, :] & causal_mask(tokens.shape[1], tokens.device)
''', "a real token's id may be smaller"),
    Mistake("target_mask", "squeezed for batch 1", '''
def target_mask(tokens, pad_id=0):
    """mask"""
    mask = padding_mask(tokens, pad_id) & causal_mask(tokens.shape[1], tokens.device)
    return mask.squeeze(0) if tokens.shape[0] == 1 else mask
''', "return shape (batch, 1, T, T)"),
    Mistake("DecoderLayer.forward", "sublayers by hand without their dropout",
            _layer(_HAND_SUBLAYERS.replace("{drop}", "")), "here nothing is dropped"),
    Mistake("DecoderLayer.forward", "F.dropout (on in eval mode too) after the feed-forward",
            _layer(_CORRECT_SELF + '''\
        x = self.cross_attn_block(x, lambda y: self.cross_attn(y, memory, memory, memory_mask,
                                                               cache=cross_cache, static_kv=True))
        return self.ff_block(x, lambda y: F.dropout(self.feed_forward(y), self.self_attn.dropout))
'''), "in eval mode dropout does nothing"),
    Mistake("DecoderLayer.forward", "cross-attention before self-attention", _layer('''\
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = self.cross_attn_block(x, lambda y: self.cross_attn(y, memory, memory, memory_mask,
                                                               cache=cross_cache, static_kv=True))
        x = self.self_attn_block(x, lambda y: self.self_attn(y, y, y, self_mask, cache=self_cache))
''' + _CORRECT_FF), "the self-attention comes first"),
    Mistake("DecoderLayer.forward", "memory squeezed for batch 1", _layer('''\
        self_cache, cross_cache = cache if cache is not None else (None, None)
        mem = memory.squeeze(0) if memory.shape[0] == 1 else memory
        x = self.self_attn_block(x, lambda y: self.self_attn(y, y, y, self_mask, cache=self_cache))
        x = self.cross_attn_block(x, lambda y: self.cross_attn(y, mem, mem, memory_mask,
                                                               cache=cross_cache, static_kv=True))
''' + _CORRECT_FF), None),
    Mistake("Decoder.forward", "two layers, hard-coded", _stack('''\
        pairs = cache if cache is not None else [None, None]
        x = self.layers[0](x, memory, self_mask, memory_mask, pairs[0])
        x = self.layers[1](x, memory, self_mask, memory_mask, pairs[1])
        return self.norm(x) if self.norm is not None else x
'''), "run every layer of self.layers"),
    Mistake("Decoder.forward", "layers in reverse order", _stack('''\
        for i in reversed(range(len(self.layers))):
            x = self.layers[i](x, memory, self_mask, memory_mask,
                               cache[i] if cache is not None else None)
        return self.norm(x) if self.norm is not None else x
'''), "in the order of self.layers"),
    Mistake("Decoder.forward", "the norm after every layer", _stack('''\
        for i, layer in enumerate(self.layers):
            x = layer(x, memory, self_mask, memory_mask, cache[i] if cache is not None else None)
            if self.norm is not None:
                x = self.norm(x)
        return x
'''), "once, after the last layer"),
]

VARIANTS += [
    Variant("DecoderLayer.forward", "sublayers by hand, F.dropout told the mode", _layer(
        _HAND_SUBLAYERS.replace(
            "{drop}", "(lambda t: F.dropout(t, block.dropout.p, training=self.training))"))),
]
