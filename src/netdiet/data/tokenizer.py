"""A WordPiece tokenizer trained offline on the training split (HF `tokenizers`), saved beside the model.

Saving it with the checkpoint guarantees that evaluation and compression use exactly the vocabulary the
model was trained with.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from netdiet.data.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID = 0


def train_wordpiece(texts: Iterable[str], vocab_size: int = 8192, max_len: int = 128) -> Tokenizer:
    """Train a lower-cased BERT-style WordPiece tokenizer; [PAD] is id 0."""
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}, got {vocab_size}")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tok.train_from_iterator(texts, trainer)
    return _configure(tok, max_len)


def _configure(tok: Tokenizer, max_len: int) -> Tokenizer:
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.enable_truncation(max_length=max_len)
    tok.no_padding()  # padding is per batch (dynamic), done by the loader
    return tok


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    """Write tokenizer.json (plain JSON, no pickle)."""
    tok.save(str(path))


def load_tokenizer(path: str | Path, max_len: int = 128) -> Tokenizer:
    """Load a tokenizer saved by `save_tokenizer`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("tokenizer file does not exist", path=path)
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type
        raise DataError(f"not a valid tokenizer file ({exc})", path=path) from None
    if tok.token_to_id("[PAD]") != PAD_ID:
        raise DataError("tokenizer has no [PAD] token with id 0", path=path)
    return _configure(tok, max_len)
