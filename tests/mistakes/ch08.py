"""Common mistakes and honest variants for chapter 8 (a decoder-only language model)."""

from . import Mistake, Variant

_SAMPLE = '''
def sample_next_token(logits, temperature=1.0, top_k=None, generator=None):
    """sample"""
{body}
'''

_LM_CLASS_HEAD = '''
class LanguageModel(nn.Module):
    """lm"""

    def __init__(self, vocab_size, d_model=128, num_heads=4, num_layers=4, d_ff=512,
                 dropout=0.1, max_len=256, norm_first=True, activation="gelu"):
        super().__init__()
        self.config = dict(vocab_size=vocab_size, d_model=d_model, num_heads=num_heads,
                           num_layers=num_layers, d_ff=d_ff, dropout=dropout, max_len=max_len,
                           norm_first=norm_first, activation=activation)
        self.max_len = max_len
        self.embed = TokenEmbedding(vocab_size, d_model)
        self.pos = LearnedPositionalEncoding(d_model, max_len)
        self.dropout = nn.Dropout(dropout)
        layer = EncoderLayer(d_model, num_heads, d_ff, dropout, activation, norm_first)
        self.layers = Encoder(layer, num_layers, final_norm=True)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.embed.embedding.weight

    def new_cache(self):
        """cache"""
        return [KVCache() for _ in self.layers.layers]
'''

_FORWARD = '''
    def forward(self, idx, cache=None):
        """forward"""
        offset = len(cache[0]) if cache else 0
        length = idx.shape[-1]
        x = {embed}
        mask = causal_mask(offset + length, idx.device)[offset:]
        if cache is None:
            x = self.layers(x, mask)
        else:
            for layer, c in zip(self.layers.layers, cache):
                x = layer.attn_block(x, lambda y, a=layer.self_attn, c=c: a(y, y, y, mask, cache=c))
                x = layer.ff_block(x, layer.feed_forward)
            x = self.layers.norm(x)
        return self.head(x)
'''

_GENERATE = '''
    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None,
                 use_cache=True):
        """generate"""
{body}
'''

_GOOD_EMBED = "self.dropout(self.pos(self.embed(idx), offset))"
_GOOD_GENERATE = '''        was_training = self.training
        self.eval()
        fits = idx.shape[1] + max_new_tokens - 1 <= self.max_len
        cache = self.new_cache() if use_cache and fits else None
        step = idx
        for _ in range(max_new_tokens):
            if cache is None:
                logits = self(idx[:, -self.max_len:])[:, -1, :]
            else:
                logits = self(step, cache)[:, -1, :]
            nxt = sample_next_token(logits, temperature, top_k, generator)
            idx = torch.cat([idx, nxt[:, None]], dim=1)
            step = nxt[:, None]
        self.train(was_training)
        return idx'''


def _lm(embed=_GOOD_EMBED, generate=_GOOD_GENERATE):
    return (_LM_CLASS_HEAD + _FORWARD.format(embed=embed)
            + _GENERATE.format(body=generate))


MISTAKES = [
    Mistake("sample_next_token", "temperature ignored", _SAMPLE.format(body='''
    if temperature == 0:
        return logits.argmax(-1)
    if top_k is not None:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
'''), "divide the logits by the temperature"),
    Mistake("sample_next_token", "temperature multiplies", _SAMPLE.format(body='''
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits * temperature
    if top_k is not None:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
'''), "does not multiply"),
    Mistake("sample_next_token", "top_k ignored", _SAMPLE.format(body='''
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
'''), "k largest"),
    Mistake("sample_next_token", "the generator is not used", _SAMPLE.format(body='''
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)
'''), "generator"),
    Mistake("sample_next_token", "greedy returns a column", _SAMPLE.format(body='''
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
'''), "shape (B,)"),
    Mistake("LanguageModel.forward", "no dropout on the embeddings",
            _lm(embed="self.pos(self.embed(idx), offset)"), "apply dropout"),
    Mistake("LanguageModel.forward", "positions restart at 0 after the cache",
            _lm(embed="self.dropout(self.pos(self.embed(idx)))"), "offset"),
    Mistake("LanguageModel.generate", "dropout left on while sampling", _lm(generate='''
        fits = idx.shape[1] + max_new_tokens - 1 <= self.max_len
        cache = self.new_cache() if use_cache and fits else None
        step = idx
        for _ in range(max_new_tokens):
            logits = (self(step, cache) if cache is not None else self(idx))[:, -1, :]
            nxt = sample_next_token(logits, temperature, top_k, generator)
            idx = torch.cat([idx, nxt[:, None]], dim=1)
            step = nxt[:, None]
        return idx'''), "eval mode"),
    Mistake("LanguageModel.generate", "the mode is not restored", _lm(generate='''
        self.eval()
        cache = self.new_cache() if use_cache else None
        step = idx
        for _ in range(max_new_tokens):
            logits = (self(step, cache) if cache is not None else self(idx))[:, -1, :]
            nxt = sample_next_token(logits, temperature, top_k, generator)
            idx = torch.cat([idx, nxt[:, None]], dim=1)
            step = nxt[:, None]
        return idx'''), "mode it was in"),
    Mistake("LanguageModel.generate", "the cache is never used", _lm(generate='''
        was_training = self.training
        self.eval()
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.max_len:])[:, -1, :]
            nxt = sample_next_token(logits, temperature, top_k, generator)
            idx = torch.cat([idx, nxt[:, None]], dim=1)
        self.train(was_training)
        return idx'''), "only the token it just produced"),
    Mistake("LanguageModel.generate", "temperature and top_k not passed on", _lm(generate='''
        was_training = self.training
        self.eval()
        cache = self.new_cache() if use_cache else None
        step = idx
        for _ in range(max_new_tokens):
            logits = (self(step, cache) if cache is not None else self(idx))[:, -1, :]
            nxt = sample_next_token(logits, generator=generator)
            idx = torch.cat([idx, nxt[:, None]], dim=1)
            step = nxt[:, None]
        self.train(was_training)
        return idx'''), None),
    Mistake("lm_loss", "targets not shifted", '''
def lm_loss(model, idx):
    """loss"""
    logits = model(idx[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), idx[:, :-1].reshape(-1))
''', "shifted left by one"),
    Mistake("lm_loss", "low-precision loss", '''
def lm_loss(model, idx):
    """loss"""
    logits = model(idx[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))
''', "float32"),
    Mistake("lm_loss", "summed, not averaged", '''
def lm_loss(model, idx):
    """loss"""
    logits = model(idx[:, :-1]).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1),
                           reduction="sum")
''', None),
]

VARIANTS = [
    Variant("sample_next_token", "Gumbel-max trick instead of multinomial", _SAMPLE.format(body='''
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    u = torch.rand(logits.shape, generator=generator).clamp_min(1e-12)
    return (logits - torch.log(-torch.log(u))).argmax(-1)
''')),
    Variant("lm_loss", "log_softmax and gather", '''
def lm_loss(model, idx):
    """loss"""
    logp = model(idx[:, :-1]).float().log_softmax(-1)
    return -logp.gather(-1, idx[:, 1:, None]).mean()
'''),
]

# Batch of one, dropout in eval mode, cropping, the mode, the sampler's arguments, the cache
# switch, the model's max_len in the loss (gap hunt of chapters 5-8).
_SAMPLE_BODY = '''
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(top_k, -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(-1)
'''


def _generate(*pairs):
    body = _GOOD_GENERATE
    for old, new in pairs:
        assert old in body, old
        body = body.replace(old, new)
    return _lm(generate=body)


MISTAKES += [
    Mistake("sample_next_token", "squeeze(): a batch of one gives a 0-dim tensor",
            _SAMPLE.format(body=_SAMPLE_BODY.replace(".squeeze(-1)", ".squeeze()")),
            "also when B is 1"),
    Mistake("LanguageModel.forward", "dropout on even in eval mode",
            _lm(embed="F.dropout(self.pos(self.embed(idx), offset), self.dropout.p, "
                      "training=True)"), "in eval mode dropout does nothing"),
    Mistake("LanguageModel.generate", "never cropped to max_len", _generate(
        ("fits = idx.shape[1] + max_new_tokens - 1 <= self.max_len", "fits = True"),
        ("self(idx[:, -self.max_len:])", "self(idx)")), "more than its max_len"),
    Mistake("LanguageModel.generate", "cropped to max_len - 1 tokens", _generate(
        ("self(idx[:, -self.max_len:])", "self(idx[:, -(self.max_len - 1):])")), "not fewer"),
    Mistake("LanguageModel.generate", "always back to training mode", _generate(
        ("self.train(was_training)", "self.train()")), "came in eval mode"),
    Mistake("LanguageModel.generate", "the generator is not passed on", _generate(
        ("sample_next_token(logits, temperature, top_k, generator)",
         "sample_next_token(logits, temperature, top_k)")), "generator: None"),
    Mistake("LanguageModel.generate", "argmax instead of the sampler", _generate(
        ("sample_next_token(logits, temperature, top_k, generator)", "logits.argmax(-1)")),
            "never called"),
    Mistake("LanguageModel.generate", "temperature applied twice", _generate(
        ("sample_next_token(logits, temperature, top_k, generator)",
         "sample_next_token(logits / max(temperature, 1e-9), temperature, top_k, generator)")),
            "not the model output at the last position"),
    Mistake("LanguageModel.generate", "use_cache=False ignored", _generate(
        ("use_cache and fits", "fits")), "without a cache"),
    Mistake("lm_loss", "the model reads all T + 1 tokens", '''
def lm_loss(model, idx):
    """loss"""
    logits = model(idx)[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), idx[:, 1:].reshape(-1))
''', "reads at most max_len"),
    Mistake("lm_loss", "vocabulary size hard-coded", '''
def lm_loss(model, idx):
    """loss"""
    logits = model(idx[:, :-1]).float()
    return F.cross_entropy(logits.reshape(-1, 9), idx[:, 1:].reshape(-1))
''', None),
]

VARIANTS += [
    Variant("LanguageModel.generate", "the cache while it fits, then re-reading", _lm(generate='''
        was_training = self.training
        self.eval()
        try:
            cache = self.new_cache() if use_cache else None
            step = idx
            for _ in range(max_new_tokens):
                if cache is not None and len(cache[0]) + step.shape[1] <= self.max_len:
                    logits = self(step, cache=cache)[:, -1]
                else:
                    cache = None
                    logits = self.forward(idx[:, -self.max_len:])[:, -1]
                nxt = sample_next_token(logits, temperature=temperature, top_k=top_k,
                                        generator=generator)
                idx = torch.cat([idx, nxt[:, None]], dim=1)
                step = nxt[:, None]
        finally:
            self.train(was_training)
        return idx''')),
]
