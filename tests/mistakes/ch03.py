"""Common mistakes and honest variants for chapter 3 (embeddings and positions)."""

from . import Mistake, Variant

EMB_INIT = '''
class TokenEmbedding(nn.Module):
    """token embedding"""

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model)

    @property
    def weight(self):
        return self.embedding.weight

    def forward(self, tokens):
        """forward"""
'''

PE_INIT = '''
class SinusoidalPositionalEncoding(nn.Module):
    """positions"""

    def __init__(self, d_model: int, max_len: int = 5000):
        super().__init__()
        self.max_len = max_len
        self.register_buffer("pe", sinusoidal_encoding(max_len, d_model), persistent=False)

    def forward(self, x, offset=0):
        """forward"""
'''

MISTAKES = [
    Mistake("TokenEmbedding.forward", "no sqrt(d_model) scaling", EMB_INIT + '''
        check_token_ids(tokens, self.vocab_size)
        return self.embedding(tokens)
''', "scale the embeddings by sqrt(d_model)"),
    Mistake("TokenEmbedding.forward", "scaled by d_model", EMB_INIT + '''
        return self.embedding(tokens) * self.d_model
''', "not by d_model"),
    Mistake("TokenEmbedding.forward", "divided by sqrt(d_model)", EMB_INIT + '''
        return self.embedding(tokens) / math.sqrt(self.d_model)
''', "do not divide"),
    Mistake("sinusoidal_encoding", "sin and cos swapped", '''
def sinusoidal_encoding(max_len, d_model):
    """table"""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.cos(position * inv_freq)
    pe[:, 1::2] = torch.sin(position * inv_freq)
    return pe
''', "sin and cos are swapped"),
    Mistake("sinusoidal_encoding", "all sines, then all cosines", '''
def sinusoidal_encoding(max_len, d_model):
    """table"""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv_freq = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    angles = position * inv_freq
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
''', "must be interleaved"),
    Mistake("sinusoidal_encoding", "each column's own index in the exponent", '''
def sinusoidal_encoding(max_len, d_model):
    """table"""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    column = torch.arange(d_model, dtype=torch.float32)
    angles = position / torch.pow(10000.0, column / d_model)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(angles[:, 0::2])
    pe[:, 1::2] = torch.cos(angles[:, 1::2])
    return pe
''', "share one frequency"),
    Mistake("sinusoidal_encoding", "float64 table", '''
def sinusoidal_encoding(max_len, d_model):
    """table"""
    position = torch.arange(max_len, dtype=torch.float64)[:, None]
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq)
    return pe
''', "float32"),
    Mistake("SinusoidalPositionalEncoding.forward", "offset ignored", PE_INIT + '''
        return x + self.pe[: x.shape[1]]
''', "offset ignored"),
    Mistake("SinusoidalPositionalEncoding.forward", "returns the encodings, not x + them",
            PE_INIT + '''
        return self.pe[offset : offset + x.shape[1]].expand_as(x)
''', "add the encodings to x"),
]

VARIANTS = [
    Variant("TokenEmbedding.forward", "one-hot matmul, float64 inside", EMB_INIT + '''
        one_hot = F.one_hot(tokens, self.vocab_size).double()
        out = one_hot @ self.embedding.weight.double() * self.d_model ** 0.5
        return out.float()
'''),
    Variant("sinusoidal_encoding", "stack and flatten, pow in float64, cut to d_model, a warning",
            '''
import warnings
def sinusoidal_encoding(max_len, d_model):
    """table"""
    warnings.warn("computing the table in float64")
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    freq = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = pos * freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :d_model].float()
'''),
    Variant("sinusoidal_encoding", "python loops with math.sin", '''
def sinusoidal_encoding(max_len, d_model):
    """table"""
    pe = torch.zeros(max_len, d_model)
    for pos in range(max_len):
        for i in range(0, d_model, 2):
            angle = pos / 10000 ** (i / d_model)
            pe[pos, i] = math.sin(angle)
            if i + 1 < d_model:
                pe[pos, i + 1] = math.cos(angle)
    return pe
'''),
    Variant("SinusoidalPositionalEncoding.forward", "narrow, unsqueeze, type_as", PE_INIT + '''
        return x + self.pe.narrow(0, offset, x.size(1)).unsqueeze(0).type_as(x)
'''),
    Variant("SinusoidalPositionalEncoding.forward", "added in float32, cast back", PE_INIT + '''
        return (x.float() + self.pe[offset : offset + x.shape[1]]).to(x.dtype)
'''),
]

# Odd widths and dtypes (issue 8).
MISTAKES += [
    Mistake("sinusoidal_encoding", "an odd d_model gives d_model + 1 columns", '''
def sinusoidal_encoding(max_len, d_model):
    """table"""
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    freq = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angles = pos * freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1).float()
''', "keeps d_model columns"),
    Mistake("sinusoidal_encoding", "an odd d_model crashes (cosines for every sine)", '''
def sinusoidal_encoding(max_len, d_model):
    """table"""
    position = torch.arange(max_len, dtype=torch.float32)[:, None]
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq)
    return pe
''', "d_model=5"),
    Mistake("SinusoidalPositionalEncoding.forward", "bfloat16 input comes back float32",
            PE_INIT + '''
        return x + self.pe[offset : offset + x.shape[1]]
''', "keeps the input's dtype"),
]

# Gradients, repeated calls and float16 (gap hunt of chapters 1-4).
MISTAKES += [
    Mistake("TokenEmbedding.forward", "weight table rescaled in place at every call",
            EMB_INIT + '''
        with torch.no_grad():
            self.embedding.weight.mul_(math.sqrt(self.d_model))
        return self.embedding(tokens)
''', "forward must not change the module's weights"),
    Mistake("TokenEmbedding.forward", "lookup in weight.data (no gradient reaches the table)",
            EMB_INIT + '''
        return self.embedding.weight.data[tokens] * math.sqrt(self.d_model)
''', "no gradient came back"),
    Mistake("SinusoidalPositionalEncoding.forward", "forward under torch.no_grad", PE_INIT + '''
        with torch.no_grad():
            return x + self.pe[offset : offset + x.shape[1]].to(x.dtype)
''', "cut off from autograd's graph"),
    Mistake("SinusoidalPositionalEncoding.forward", "float16 comes back float32 (bfloat16 only)",
            PE_INIT + '''
        table = self.pe[offset : offset + x.shape[1]]
        return x + (table.to(x.dtype) if x.dtype == torch.bfloat16 else table)
''', "keeps the input's dtype"),
    Mistake("SinusoidalPositionalEncoding.forward", "max_len check off by one (>=)", PE_INIT + '''
        if offset + x.shape[1] >= self.max_len:
            raise ValueError("sequence too long")
        return x + self.pe[offset : offset + x.shape[1]].to(x.dtype)
''', "sequence too long"),
]

VARIANTS += [
    Variant("TokenEmbedding.forward", "numpy sqrt scalar, in-place mul on the lookup result",
            EMB_INIT + '''
        import numpy as np
        out = self.embedding(tokens)
        out.mul_(np.sqrt(self.d_model))
        return out
'''),
]
