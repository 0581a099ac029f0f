"""Common mistakes and honest variants for chapter 4 (the encoder)."""

from . import Mistake, Variant

FFN_INIT = '''
class PositionwiseFeedForward(nn.Module):
    """feed-forward"""

    def __init__(self, d_model, d_ff, dropout=0.0, activation="relu", bias=True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}")
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.activation = activation

    def forward(self, x):
        """forward"""
'''

SUBLAYER_INIT = '''
class Sublayer(nn.Module):
    """residual + norm"""

    def __init__(self, d_model, dropout, norm_first, eps=1e-5, bias=True):
        super().__init__()
        self.norm = nn.LayerNorm(d_model, eps=eps, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x, fn):
        """forward"""
'''

LAYER_INIT = '''
class EncoderLayer(nn.Module):
    """encoder layer"""

    def __init__(self, d_model=512, num_heads=8, d_ff=2048, dropout=0.1, activation="relu",
                 norm_first=False, bias=True, layer_norm_eps=1e-5):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout, bias=bias)
        self.feed_forward = PositionwiseFeedForward(d_model, d_ff, dropout, activation, bias)
        self.attn_block = Sublayer(d_model, dropout, norm_first, layer_norm_eps, bias)
        self.ff_block = Sublayer(d_model, dropout, norm_first, layer_norm_eps, bias)

    def forward(self, x, mask=None):
        """forward"""
'''

ENCODER_INIT = '''
class Encoder(nn.Module):
    """encoder"""

    def __init__(self, layer, num_layers, final_norm=False):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        d_model = layer.self_attn.d_model
        self.norm = nn.LayerNorm(d_model) if final_norm else None

    def forward(self, x, mask=None):
        """forward"""
'''

MISTAKES = [
    Mistake("PositionwiseFeedForward.forward", "activation ignored (always relu)", FFN_INIT + '''
        return self.linear2(self.dropout(F.relu(self.linear1(x))))
''', "activation ignored"),
    Mistake("PositionwiseFeedForward.forward", "no activation", FFN_INIT + '''
        return self.linear2(self.dropout(self.linear1(x)))
''', "between the two linear layers"),
    Mistake("PositionwiseFeedForward.forward", "activation after the second linear too",
            FFN_INIT + '''
        act = ACTIVATIONS[self.activation]
        return act(self.linear2(self.dropout(act(self.linear1(x)))))
''', "not after"),
    Mistake("Sublayer.forward", "missing residual", SUBLAYER_INIT + '''
        if self.norm_first:
            return self.dropout(fn(self.norm(x)))
        return self.norm(self.dropout(fn(x)))
''', "missing residual"),
    Mistake("Sublayer.forward", "norm_first ignored (always post-norm)", SUBLAYER_INIT + '''
        return self.norm(x + self.dropout(fn(x)))
''', "norm_first=True ignored"),
    Mistake("Sublayer.forward", "post-norm and pre-norm swapped", SUBLAYER_INIT + '''
        if not self.norm_first:
            return x + self.dropout(fn(self.norm(x)))
        return self.norm(x + self.dropout(fn(x)))
''', "ignored"),
    Mistake("Sublayer.forward", "pre-norm residual of the normalised input", SUBLAYER_INIT + '''
        if self.norm_first:
            y = self.norm(x)
            return y + self.dropout(fn(y))
        return self.norm(x + self.dropout(fn(x)))
''', "original x"),
    Mistake("EncoderLayer.forward", "mask not passed to self-attention", LAYER_INIT + '''
        x = self.attn_block(x, lambda y: self.self_attn(y, y, y))
        return self.ff_block(x, self.feed_forward)
''', "mask never reaches"),
    Mistake("EncoderLayer.forward", "attention over x instead of the sublayer's input",
            LAYER_INIT + '''
        x = self.attn_block(x, lambda y: self.self_attn(x, x, x, mask))
        return self.ff_block(x, self.feed_forward)
''', "not over"),
    Mistake("EncoderLayer.forward", "feed-forward before attention", LAYER_INIT + '''
        x = self.ff_block(x, self.feed_forward)
        return self.attn_block(x, lambda y: self.self_attn(y, y, y, mask))
''', "comes first"),
    Mistake("EncoderLayer.forward", "one norm for both sublayers", LAYER_INIT + '''
        x = self.attn_block(x, lambda y: self.self_attn(y, y, y, mask))
        return self.attn_block(x, self.feed_forward)
''', "its own layer norm"),
    Mistake("EncoderLayer.forward", "written out, post-norm only (norm_first ignored)",
            LAYER_INIT + '''
        x = self.attn_block.norm(x + self.self_attn(x, x, x, mask))
        return self.ff_block.norm(x + self.feed_forward(x))
''', "norm_first=True ignored"),
    Mistake("EncoderLayer.forward", "written out, no residual", LAYER_INIT + '''
        x = self.attn_block.norm(self.self_attn(x, x, x, mask))
        return self.ff_block.norm(self.feed_forward(x))
''', "missing residual"),
    Mistake("Encoder.forward", "final norm forgotten", ENCODER_INIT + '''
        for layer in self.layers:
            x = layer(x, mask)
        return x
''', "final norm is missing"),
    Mistake("Encoder.forward", "the first layer, num_layers times", ENCODER_INIT + '''
        for _ in self.layers:
            x = self.layers[0](x, mask)
        return self.norm(x) if self.norm is not None else x
''', "run every layer"),
    Mistake("Encoder.forward", "mask not passed", ENCODER_INIT + '''
        for layer in self.layers:
            x = layer(x)
        return self.norm(x) if self.norm is not None else x
''', "mask to every layer"),
    Mistake("Encoder.forward", "norm after every layer", ENCODER_INIT + '''
        for layer in self.layers:
            x = layer(x, mask)
            if self.norm is not None:
                x = self.norm(x)
        return x
''', "once, after the last layer"),
]

VARIANTS = [
    Variant("PositionwiseFeedForward.forward", "F.linear, if/else, float64 inside", FFN_INIT + '''
        h = F.linear(x.double(), self.linear1.weight.double(),
                     None if self.linear1.bias is None else self.linear1.bias.double())
        h = F.gelu(h) if self.activation == "gelu" else h.clamp_min(0)
        h = self.dropout(h)
        out = F.linear(h, self.linear2.weight.double(),
                       None if self.linear2.bias is None else self.linear2.bias.double())
        return out.to(x.dtype)
'''),
    Variant("Sublayer.forward", "torch.add and a warning", SUBLAYER_INIT + '''
        import warnings
        warnings.warn("sublayer")
        if not self.norm_first:
            return self.norm(torch.add(x, self.dropout(fn(x))))
        normed = self.norm(x)
        return torch.add(x, self.dropout(fn(normed)))
'''),
    Variant("EncoderLayer.forward", "written out with the sublayers' norms", LAYER_INIT + '''
        def sub(block, t, fn):
            if block.norm_first:
                return t + block.dropout(fn(block.norm(t)))
            return block.norm(t + block.dropout(fn(t)))
        x = sub(self.attn_block, x, lambda y: self.self_attn(y, y, y, mask=mask))
        return sub(self.ff_block, x, lambda y: self.feed_forward(y))
'''),
    Variant("Encoder.forward", "functools.reduce", ENCODER_INIT + '''
        import functools
        x = functools.reduce(lambda acc, layer: layer(acc, mask=mask), self.layers, x)
        if self.norm is None:
            return x
        return self.norm(x)
'''),
]

# Dropout in each place, eval mode, forbidden layers (issue 8).
MISTAKES += [
    Mistake("PositionwiseFeedForward.forward", "no dropout", FFN_INIT + '''
        return self.linear2(ACTIVATIONS[self.activation](self.linear1(x)))
''', "go through self.dropout"),
    Mistake("PositionwiseFeedForward.forward", "dropout on the output", FFN_INIT + '''
        return self.dropout(self.linear2(ACTIVATIONS[self.activation](self.linear1(x))))
''', "not on the output"),
    Mistake("PositionwiseFeedForward.forward", "dropout on the input", FFN_INIT + '''
        return self.linear2(ACTIVATIONS[self.activation](self.linear1(self.dropout(x))))
''', "not on the input"),
    Mistake("PositionwiseFeedForward.forward", "F.dropout in eval mode too", FFN_INIT + '''
        hidden = ACTIVATIONS[self.activation](self.linear1(x))
        return self.linear2(F.dropout(hidden, self.dropout.p))
''', "training only"),
    Mistake("Sublayer.forward", "no dropout", SUBLAYER_INIT + '''
        if self.norm_first:
            return x + fn(self.norm(x))
        return self.norm(x + fn(x))
''', "goes through self.dropout"),
    Mistake("Sublayer.forward", "dropout on the residual sum", SUBLAYER_INIT + '''
        if self.norm_first:
            return self.dropout(x + fn(self.norm(x)))
        return self.norm(self.dropout(x + fn(x)))
''', "not on the residual sum"),
    Mistake("Sublayer.forward", "dropout on fn's input", SUBLAYER_INIT + '''
        if self.norm_first:
            return x + fn(self.dropout(self.norm(x)))
        return self.norm(x + fn(self.dropout(x)))
''', "not on its input"),
    Mistake("Sublayer.forward", "F.dropout with training=True", SUBLAYER_INIT + '''
        def drop(t):
            return F.dropout(t, self.dropout.p, training=True)
        if self.norm_first:
            return x + drop(fn(self.norm(x)))
        return self.norm(x + drop(fn(x)))
''', "training only"),
    Mistake("EncoderLayer.forward", "PyTorch's nn.TransformerEncoderLayer, under another name",
            LAYER_INIT + '''
        Layer = getattr(nn, "TransformerEncoder" + "Layer")
        attn = self.self_attn
        d_model, heads = attn.d_model, attn.num_heads
        layer = Layer(d_model, heads, self.feed_forward.linear1.out_features, dropout=0.0,
                      activation=self.feed_forward.activation, batch_first=True,
                      norm_first=self.attn_block.norm_first,
                      layer_norm_eps=self.attn_block.norm.eps,
                      bias=attn.q_proj.bias is not None)
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(torch.cat(
                [attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
            layer.self_attn.out_proj.weight.copy_(attn.out_proj.weight)
            layer.linear1.weight.copy_(self.feed_forward.linear1.weight)
            layer.linear2.weight.copy_(self.feed_forward.linear2.weight)
            layer.norm1.weight.copy_(self.attn_block.norm.weight)
            layer.norm2.weight.copy_(self.ff_block.norm.weight)
            if attn.q_proj.bias is not None:
                layer.self_attn.in_proj_bias.copy_(torch.cat(
                    [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
                layer.self_attn.out_proj.bias.copy_(attn.out_proj.bias)
                layer.linear1.bias.copy_(self.feed_forward.linear1.bias)
                layer.linear2.bias.copy_(self.feed_forward.linear2.bias)
                layer.norm1.bias.copy_(self.attn_block.norm.bias)
                layer.norm2.bias.copy_(self.ff_block.norm.bias)
        b, n, _ = x.shape
        blocked = None if mask is None else ~mask.broadcast_to(b, heads, n, n).reshape(
            b * heads, n, n)
        return layer.train(self.training)(x, src_mask=blocked)
''', "torch.nn.TransformerEncoderLayer"),
    Mistake("Encoder.forward", "calls PyTorch's nn.TransformerEncoder (to compare)",
            ENCODER_INIT + '''
        Stack = nn.TransformerEncoder
        torch_stack = Stack(nn.TransformerEncoderLayer(x.shape[-1], 1, 16, batch_first=True),
                            len(self.layers), enable_nested_tensor=False)
        _ = torch_stack(x)
        for layer in self.layers:
            x = layer(x, mask)
        return x if self.norm is None else self.norm(x)
''', "torch.nn.TransformerEncoder"),
]

VARIANTS += [
    Variant("PositionwiseFeedForward.forward", "F.dropout told the mode", FFN_INIT + '''
        hidden = ACTIVATIONS[self.activation](self.linear1(x))
        hidden = F.dropout(hidden, p=self.dropout.p, training=self.training)
        return self.linear2(hidden)
'''),
    Variant("Sublayer.forward", "a mask of kept activations drawn by hand", SUBLAYER_INIT + '''
        def drop(t):
            p = self.dropout.p
            if not self.training or p == 0.0:
                return t
            keep = (torch.rand_like(t) >= p).to(t.dtype)
            return t * keep / (1.0 - p) if p < 1.0 else t * 0.0
        if self.norm_first:
            return x + drop(fn(self.norm(x)))
        return self.norm(x + drop(fn(x)))
'''),
]

# Dropout with 0 < p < 1 in training mode, gradients, visible shapes (gap hunt of chapters 1-4).
MISTAKES += [
    Mistake("PositionwiseFeedForward.forward", "dropout before the activation (differs for gelu)",
            FFN_INIT + '''
        return self.linear2(ACTIVATIONS[self.activation](self.dropout(self.linear1(x))))
''', "changed by many factors"),
    Mistake("PositionwiseFeedForward.forward", "dropout by hand without 1/(1-p) rescaling",
            FFN_INIT + '''
        h = ACTIVATIONS[self.activation](self.linear1(x))
        if self.training and self.dropout.p > 0:
            h = h * (torch.rand_like(h) >= self.dropout.p)
        return self.linear2(h)
''', "scaled by 1 / (1 − p)"),
    Mistake("PositionwiseFeedForward.forward", "forward under torch.no_grad", FFN_INIT + '''
        with torch.no_grad():
            return self.linear2(self.dropout(ACTIVATIONS[self.activation](self.linear1(x))))
''', "cut off from autograd's graph"),
    Mistake("PositionwiseFeedForward.forward", "hard-coded (2, L) leading shape", FFN_INIT + '''
        h = self.linear1(x.reshape(-1, x.shape[-1])).view(2, -1, self.linear1.out_features)
        return self.linear2(self.dropout(ACTIVATIONS[self.activation](h)))
''', "expected shape"),
    Mistake("Sublayer.forward", "dropout by hand without rescaling", SUBLAYER_INIT + '''
        def drop(t):
            if self.training and self.dropout.p > 0:
                return t * (torch.rand_like(t) >= self.dropout.p)
            return t
        if self.norm_first:
            return x + drop(fn(self.norm(x)))
        return self.norm(x + drop(fn(x)))
''', "scaled by 1 / (1 − p)"),
    Mistake("Sublayer.forward", "F.layer_norm without the norm's eps", SUBLAYER_INIT + '''
        n = self.norm
        if self.norm_first:
            return x + self.dropout(fn(F.layer_norm(x, n.normalized_shape, n.weight, n.bias)))
        return F.layer_norm(x + self.dropout(fn(x)), n.normalized_shape, n.weight, n.bias)
''', "not the default 1e-5"),
    Mistake("Sublayer.forward", "pre-norm branch drops in eval mode too", SUBLAYER_INIT + '''
        if self.norm_first:
            return x + F.dropout(fn(self.norm(x)), self.dropout.p)
        return self.norm(x + self.dropout(fn(x)))
''', None),
    Mistake("Sublayer.forward", "residual detached", SUBLAYER_INIT + '''
        if self.norm_first:
            return x.detach() + self.dropout(fn(self.norm(x)))
        return self.norm(x.detach() + self.dropout(fn(x)))
''', "x.grad"),
    Mistake("EncoderLayer.forward", "extra dropout on the attention output", LAYER_INIT + '''
        p = self.attn_block.dropout.p
        x = self.attn_block(x, lambda y: F.dropout(self.self_attn(y, y, y, mask), p,
                                                   self.training))
        return self.ff_block(x, self.feed_forward)
''', "dropout is applied twice"),
    Mistake("EncoderLayer.forward", "written out without dropout (norm_first respected)",
            LAYER_INIT + '''
        a, f = self.attn_block, self.ff_block
        if a.norm_first:
            y = a.norm(x)
            x = x + self.self_attn(y, y, y, mask)
            return x + self.feed_forward(f.norm(x))
        x = a.norm(x + self.self_attn(x, x, x, mask))
        return f.norm(x + self.feed_forward(x))
''', "nothing was dropped"),
    Mistake("EncoderLayer.forward", "mask ignored unless 4-D", LAYER_INIT + '''
        m = mask if mask is not None and mask.dim() == 4 else None
        x = self.attn_block(x, lambda y: self.self_attn(y, y, y, m))
        return self.ff_block(x, self.feed_forward)
''', "mask never reaches"),
    Mistake("Encoder.forward", "hard-coded two layers", ENCODER_INIT + '''
        x = self.layers[1](self.layers[0](x, mask), mask)
        return self.norm(x) if self.norm is not None else x
''', "run every layer"),
    Mistake("Encoder.forward", "final norm only for pre-norm layers", ENCODER_INIT + '''
        for layer in self.layers:
            x = layer(x, mask)
        if self.norm is not None and self.layers[0].attn_block.norm_first:
            x = self.norm(x)
        return x
''', "final norm is missing"),
    Mistake("Encoder.forward", "layers detached from each other", ENCODER_INIT + '''
        for layer in self.layers:
            x = layer(x, mask).detach()
        return self.norm(x) if self.norm is not None else x
''', "no gradient"),
]

VARIANTS += [
    Variant("PositionwiseFeedForward.forward", "dropout drawn by hand with bernoulli",
            FFN_INIT + '''
        h = ACTIVATIONS[self.activation](self.linear1(x))
        p = self.dropout.p
        if self.training and p > 0:
            keep = torch.bernoulli(torch.full_like(h, 1.0 - p))
            h = h * keep / (1.0 - p) if p < 1.0 else h * 0.0
        return self.linear2(h)
'''),
    Variant("Sublayer.forward", "F.layer_norm and F.dropout with the module's settings",
            SUBLAYER_INIT + '''
        n = self.norm

        def norm(t):
            return F.layer_norm(t, n.normalized_shape, n.weight, n.bias, n.eps)

        def drop(t):
            return F.dropout(t, self.dropout.p, training=self.training)

        return x + drop(fn(norm(x))) if self.norm_first else norm(x + drop(fn(x)))
'''),
    Variant("Encoder.forward", "activation checkpointing per layer", ENCODER_INIT + '''
        from torch.utils.checkpoint import checkpoint
        for layer in self.layers:
            x = checkpoint(layer, x, mask, use_reentrant=False)
        return self.norm(x) if self.norm is not None else x
'''),
]
