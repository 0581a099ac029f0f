"""Common mistakes and honest variants for chapter 6 (the full model and decoding)."""

from . import Mistake, Variant

_ENCODE = '''\
        if src_mask is None:
            src_mask = self.src_mask(src)
        x = self.embed_dropout(self.src_pos(self.src_embed(src)))
        return self.encoder(x, src_mask)
'''
_DECODE = '''\
        offset = len(cache[0][0]) if cache is not None else 0
        if tgt_mask is None and cache is None:
            tgt_mask = self.tgt_mask(tgt)
        x = self.embed_dropout(self.tgt_pos(self.tgt_embed(tgt), offset=offset))
        x = self.decoder(x, memory, tgt_mask, memory_mask, cache)
        return self.generator(x)
'''
_FORWARD = '''\
        src_mask = self.src_mask(src)
        memory = self.encode(src, src_mask)
        return self.decode(tgt, memory, src_mask)
'''

_CLASS = '''
class Transformer(nn.Module):
    """transformer"""

    def __init__(self, src_vocab_size, tgt_vocab_size, d_model=512, num_heads=8,
                 num_encoder_layers=6, num_decoder_layers=6, d_ff=2048, dropout=0.1,
                 activation="relu", norm_first=False, final_norm=None, positional="sinusoidal",
                 max_len=5000, tie_embeddings=False, share_embeddings=False, pad_id=0):
        super().__init__()
        final_norm = norm_first if final_norm is None else final_norm
        self.pad_id = pad_id
        self.d_model = d_model
        self.src_embed = TokenEmbedding(src_vocab_size, d_model)
        self.tgt_embed = TokenEmbedding(tgt_vocab_size, d_model)
        position_cls = (
            SinusoidalPositionalEncoding if positional == "sinusoidal" else LearnedPositionalEncoding
        )
        self.src_pos = position_cls(d_model, max_len)
        self.tgt_pos = position_cls(d_model, max_len)
        self.embed_dropout = nn.Dropout(dropout)
        layer_args = dict(d_model=d_model, num_heads=num_heads, d_ff=d_ff, dropout=dropout,
                          activation=activation, norm_first=norm_first)
        self.encoder = Encoder(EncoderLayer(**layer_args), num_encoder_layers, final_norm)
        self.decoder = Decoder(DecoderLayer(**layer_args), num_decoder_layers, final_norm)
        self.generator = nn.Linear(d_model, tgt_vocab_size)

    def src_mask(self, src):
        return padding_mask(src, self.pad_id)

    def tgt_mask(self, tgt):
        return target_mask(tgt, self.pad_id)

    def new_cache(self):
        return [(KVCache(), KVCache()) for _ in self.decoder.layers]

    def encode(self, src, src_mask=None):
        """encode"""
{encode}
    def decode(self, tgt, memory, memory_mask=None, tgt_mask=None, cache=None):
        """decode"""
{decode}
    def forward(self, src, tgt):
        """forward"""
{forward}'''


def _model(encode: str = _ENCODE, decode: str = _DECODE, forward: str = _FORWARD) -> str:
    return _CLASS.format(encode=encode, decode=decode, forward=forward)


_GREEDY_OWN_LOOP = '''
@torch.no_grad()
def greedy_decode(model, src, max_len, bos_id=BOS, eos_id=EOS, use_cache=True):
    """greedy"""
    model.eval()
    src_mask = model.src_mask(src)
    memory = model.encode(src, src_mask)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
    finished = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        logits = model.decode(out, memory, src_mask)[:, {position}]
        logits[:, [model.pad_id, bos_id]] = float("-inf")
        next_token = logits.argmax(dim=-1)
        {after_eos}
        out = torch.cat([out, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        {stop}
    return out
'''


def _greedy(position: str = "-1", after_eos: str = "next_token[finished] = model.pad_id",
            stop: str = "if finished.all(): break") -> str:
    return _GREEDY_OWN_LOOP.format(position=position, after_eos=after_eos, stop=stop)


_BEAM = '''
def beam_step(scores, log_probs, finished, pad_id=PAD):
    """beam step"""
    batch, k = scores.shape
    vocab = log_probs.shape[-1]
    {finished_rule}
    candidates = scores[:, :, None] + log_probs.view(batch, k, vocab)
    scores, flat = candidates.view(batch, k * vocab).topk(k, dim=-1)
    beam, token = flat // vocab, flat % vocab
    rows = {rows}
    return scores, rows.view(-1), token.view(-1)
'''
_PAD_FREE = '''pad_only = torch.full_like(log_probs, float("-inf"))
    pad_only[:, pad_id] = 0.0
    log_probs = torch.where(finished[:, None], pad_only, log_probs)'''
_WITH_OFFSET = "torch.arange(batch)[:, None] * k + beam"

MISTAKES = [
    Mistake("Transformer.encode", "embeddings not scaled", _model(encode='''\
        if src_mask is None:
            src_mask = self.src_mask(src)
        x = self.src_pos(self.src_embed.embedding(src))
        return self.encoder(x, src_mask)
'''), "sqrt(d_model)"),
    Mistake("Transformer.encode", "no positional encoding", _model(encode='''\
        if src_mask is None:
            src_mask = self.src_mask(src)
        return self.encoder(self.src_embed(src), src_mask)
'''), "positional encoding"),
    Mistake("Transformer.encode", "given mask ignored", _model(encode='''\
        x = self.src_pos(self.src_embed(src))
        return self.encoder(x, self.src_mask(src))
'''), "src_mask argument"),
    Mistake("Transformer.decode", "positions restart at 0 with a cache", _model(decode='''\
        if tgt_mask is None and cache is None:
            tgt_mask = self.tgt_mask(tgt)
        x = self.tgt_pos(self.tgt_embed(tgt))
        return self.generator(self.decoder(x, memory, tgt_mask, memory_mask, cache))
'''), "offset"),
    Mistake("Transformer.decode", "no output projection", _model(decode='''\
        offset = len(cache[0][0]) if cache is not None else 0
        if tgt_mask is None and cache is None:
            tgt_mask = self.tgt_mask(tgt)
        x = self.tgt_pos(self.tgt_embed(tgt), offset=offset)
        return self.decoder(x, memory, tgt_mask, memory_mask, cache)
'''), "self.generator"),
    Mistake("Transformer.decode", "causal mask only (no target padding)", _model(decode='''\
        offset = len(cache[0][0]) if cache is not None else 0
        if tgt_mask is None and cache is None:
            tgt_mask = causal_mask(tgt.shape[1])
        x = self.tgt_pos(self.tgt_embed(tgt), offset=offset)
        return self.generator(self.decoder(x, memory, tgt_mask, memory_mask, cache))
'''), "hide padding"),
    Mistake("Transformer.decode", "no target mask at all", _model(decode='''\
        offset = len(cache[0][0]) if cache is not None else 0
        x = self.tgt_pos(self.tgt_embed(tgt), offset=offset)
        return self.generator(self.decoder(x, memory, tgt_mask, memory_mask, cache))
'''), "target mask: causal"),
    Mistake("Transformer.forward", "memory mask not passed", _model(forward='''\
        return self.decode(tgt, self.encode(src))
'''), "memory mask"),
    Mistake("greedy_decode", "logits of the first position", _greedy(position="0"),
            "LAST position"),
    Mistake("greedy_decode", "no padding after EOS", _greedy(after_eos="pass"),
            "append pad_id"),
    Mistake("greedy_decode", "never stops early", _greedy(stop="pass"),
            "stop as soon as"),
    Mistake("greedy_decode", "PAD and BOS not forbidden", '''
@torch.no_grad()
def greedy_decode(model, src, max_len, bos_id=BOS, eos_id=EOS, use_cache=True):
    """greedy"""
    model.eval()
    src_mask = model.src_mask(src)
    memory = model.encode(src, src_mask)
    out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long)
    finished = torch.zeros(src.shape[0], dtype=torch.bool)
    for _ in range(max_len):
        next_token = model.decode(out, memory, src_mask)[:, -1].argmax(dim=-1)
        next_token[finished] = model.pad_id
        out = torch.cat([out, next_token[:, None]], dim=1)
        finished |= next_token == eos_id
        if finished.all():
            break
    return out
''', "never outputs"),
    Mistake("length_penalty", "plain length ** alpha", '''
def length_penalty(length, alpha):
    """penalty"""
    return length.float() ** alpha
''', "not length ** alpha"),
    Mistake("length_penalty", "divided after the power", '''
def length_penalty(length, alpha):
    """penalty"""
    return (5.0 + length.float()) ** alpha / 6.0
''', "divide (5 + length) by 6 before"),
    Mistake("beam_step", "finished hypotheses extended like the others",
            _BEAM.format(finished_rule="", rows=_WITH_OFFSET), "at no cost"),
    Mistake("beam_step", "rows without the batch offset",
            _BEAM.format(finished_rule=_PAD_FREE, rows="beam"), "batch offset"),
    Mistake("beam_step", "finished hypotheses pay the pad token's log-prob",
            _BEAM.format(finished_rule='''other = torch.full_like(log_probs, float("-inf"))
    other[:, pad_id] = log_probs[:, pad_id]
    log_probs = torch.where(finished[:, None], other, log_probs)''', rows=_WITH_OFFSET),
            "at no cost"),
]

VARIANTS = [
    Variant("Transformer.encode", "inline embedding arithmetic", _model(encode='''\
        mask = self.src_mask(src) if src_mask is None else src_mask
        x = self.src_embed.embedding(src) * self.d_model ** 0.5
        x = self.src_pos(x)
        return self.encoder(self.embed_dropout(x), mask=mask)
''')),
    Variant("Transformer.decode", "keyword arguments and a warning", _model(decode='''\
        import warnings
        warnings.warn("decoding")
        offset = 0 if cache is None else len(cache[0][0])
        if cache is None and tgt_mask is None:
            tgt_mask = target_mask(tgt, pad_id=self.pad_id)
        x = self.tgt_pos(self.tgt_embed(tgt), offset)
        h = self.decoder(self.embed_dropout(x), memory, self_mask=tgt_mask,
                         memory_mask=memory_mask, cache=cache)
        return self.generator(h)
''')),
    Variant("Transformer.forward", "masks built by hand", _model(forward='''\
        src_mask = (src != self.pad_id)[:, None, None, :]
        return self.decode(tgt, self.encode(src, src_mask=src_mask), memory_mask=src_mask)
''')),
    Variant("greedy_decode", "own loop, list of columns", '''
def greedy_decode(model, src, max_len, bos_id=BOS, eos_id=EOS, use_cache=True):
    """greedy"""
    model.eval()
    with torch.no_grad():
        src_mask = model.src_mask(src)
        memory = model.encode(src, src_mask)
        cache = model.new_cache() if use_cache else None
        columns = [torch.full((src.shape[0],), bos_id, dtype=torch.long)]
        done = torch.zeros(src.shape[0], dtype=torch.bool)
        for _ in range(max_len):
            prefix = torch.stack(columns, dim=1)
            if cache is not None:
                logits = model.decode(prefix[:, -1:], memory, src_mask, cache=cache)
            else:
                logits = model.decode(prefix, memory, src_mask)
            log_probs = F.log_softmax(logits[:, -1], dim=-1)
            log_probs[:, model.pad_id] = -float("inf")
            log_probs[:, bos_id] = -float("inf")
            token = torch.where(done, torch.full_like(done, model.pad_id, dtype=torch.long),
                                log_probs.argmax(-1))
            columns.append(token)
            done = done | token.eq(eos_id)
            if bool(done.all()):
                break
        return torch.stack(columns, dim=1)
'''),
    Variant("length_penalty", "pow", '''
def length_penalty(length, alpha):
    """penalty"""
    return torch.pow((length.to(torch.float32) + 5) / 6, alpha)
'''),
    Variant("beam_step", "per-example loop with a warning", '''
import warnings
def beam_step(scores, log_probs, finished, pad_id=PAD):
    """beam step"""
    warnings.warn("looping over the batch")
    batch, k = scores.shape
    vocab = log_probs.shape[-1]
    cost = log_probs.clone()
    cost[finished] = float("-inf")
    cost[finished, pad_id] = 0.0
    new_scores, rows, tokens = [], [], []
    for b in range(batch):
        total = (scores[b][:, None] + cost[b * k:(b + 1) * k]).flatten()
        best, index = torch.sort(total, descending=True)
        new_scores.append(best[:k])
        rows.append(b * k + torch.div(index[:k], vocab, rounding_mode="floor"))
        tokens.append(index[:k] % vocab)
    return torch.stack(new_scores), torch.cat(rows), torch.cat(tokens)
'''),
]

# Dropout on the embeddings, eval mode while decoding, forbidden modules (issue 8).
MISTAKES += [
    Mistake("Transformer.encode", "no dropout on the embeddings", _model(encode='''\
        if src_mask is None:
            src_mask = self.src_mask(src)
        return self.encoder(self.src_pos(self.src_embed(src)), src_mask)
'''), "embedding dropout"),
    Mistake("Transformer.encode", "dropout before the positions are added", _model(encode='''\
        if src_mask is None:
            src_mask = self.src_mask(src)
        x = self.src_pos(self.embed_dropout(self.src_embed(src)))
        return self.encoder(x, src_mask)
'''), "after the positions"),
    Mistake("Transformer.decode", "no dropout on the embeddings", _model(decode='''\
        offset = len(cache[0][0]) if cache is not None else 0
        if tgt_mask is None and cache is None:
            tgt_mask = self.tgt_mask(tgt)
        x = self.tgt_pos(self.tgt_embed(tgt), offset=offset)
        return self.generator(self.decoder(x, memory, tgt_mask, memory_mask, cache))
'''), "embedding dropout"),
    Mistake("Transformer.decode", "F.dropout on the embeddings in eval mode too", _model(decode='''\
        offset = len(cache[0][0]) if cache is not None else 0
        if tgt_mask is None and cache is None:
            tgt_mask = self.tgt_mask(tgt)
        x = F.dropout(self.tgt_pos(self.tgt_embed(tgt), offset=offset), self.embed_dropout.p)
        return self.generator(self.decoder(x, memory, tgt_mask, memory_mask, cache))
'''), "training only"),
    Mistake("Transformer.encode", "calls PyTorch's nn.TransformerEncoder (to compare)",
            _model(encode='''\
        if src_mask is None:
            src_mask = self.src_mask(src)
        x = self.embed_dropout(self.src_pos(self.src_embed(src)))
        Stack = nn.TransformerEncoder
        _ = Stack(nn.TransformerEncoderLayer(x.shape[-1], 1, 16, batch_first=True), 1,
                  enable_nested_tensor=False)(x)
        return self.encoder(x, src_mask)
'''), "torch.nn.TransformerEncoder"),
    Mistake("greedy_decode", "the model left in training mode", _greedy().replace(
        "    model.eval()\n", ""), "eval mode"),
]

VARIANTS += [
    Variant("greedy_decode", "model.train(False) and inference_mode", _greedy().replace(
        "@torch.no_grad()\n", "@torch.inference_mode()\n").replace(
        "model.eval()", "model.train(False)")),
]

# Gaps found by the gap hunt: special ids other than the course's PAD, BOS, EOS; alpha 0 and
# one length; encoding twice; no memory mask while decoding.
MISTAKES += [
    Mistake("Transformer.encode", "default mask made with id 0 as padding", _model(encode='''\
        if src_mask is None:
            src_mask = (src != 0)[:, None, None, :]
        x = self.embed_dropout(self.src_pos(self.src_embed(src)))
        return self.encoder(x, src_mask)
'''), "the model's pad_id"),
    Mistake("Transformer.forward", "the memory encoded twice", _model(forward='''\
        src_mask = self.src_mask(src)
        memory = self.encoder(self.encode(src, src_mask), src_mask)
        return self.decode(tgt, memory, src_mask)
'''), "the encoder's output once"),
    Mistake("greedy_decode", "the course's EOS instead of eos_id",
            _greedy().replace("next_token == eos_id", "next_token == EOS"),
            "the eos_id you are given"),
    Mistake("greedy_decode", "the course's BOS instead of bos_id",
            _greedy().replace("1), bos_id,", "1), BOS,").replace("pad_id, bos_id]", "pad_id, BOS]"),
            "bos_id you are given"),
    Mistake("greedy_decode", "the course's PAD instead of the model's pad_id",
            _greedy().replace("model.pad_id", "PAD"), "the course's PAD"),
    Mistake("greedy_decode", "no memory mask for the decoder",
            _greedy().replace("model.decode(out, memory, src_mask)",
                              "model.decode(out, memory)"), "as its memory mask"),
    Mistake("length_penalty", "integer ones for alpha 0", '''
def length_penalty(length, alpha):
    """penalty"""
    if alpha == 0:
        return torch.ones_like(length)
    return ((5.0 + length.float()) / 6.0) ** alpha
''', "float32 tensor"),
    Mistake("length_penalty", "a Python number for one length", '''
def length_penalty(length, alpha):
    """penalty"""
    penalty = ((5.0 + length.float()) / 6.0) ** alpha
    return penalty.item() if penalty.numel() == 1 else penalty
''', "not a Python number"),
    Mistake("beam_step", "the course's PAD for finished hypotheses",
            _BEAM.format(finished_rule=_PAD_FREE.replace("[:, pad_id]", "[:, PAD]"),
                         rows=_WITH_OFFSET), "the pad_id you are given"),
]
