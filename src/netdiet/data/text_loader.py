"""Batches of token ids with dynamic padding (each batch is padded to its own longest example)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from tokenizers import Tokenizer

from netdiet.data.batch import Batch, EpochBatches, shard_bounds
from netdiet.data.glue import TextExamples
from netdiet.data.tokenizer import PAD_ID


class TextLoader(EpochBatches):
    """Yields Batch((input_ids, attention_mask, token_type_ids), labels); `batch_size` is global."""

    def __init__(
        self,
        examples: TextExamples,
        tokenizer: Tokenizer,
        batch_size: int,
        *,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0 or batch_size < world_size:
            raise ValueError(f"batch_size must be >= max(1, world_size={world_size}), got {batch_size}")
        if examples.text_b is None:
            encs = tokenizer.encode_batch(examples.text_a)
        else:
            encs = tokenizer.encode_batch(list(zip(examples.text_a, examples.text_b, strict=True)))
        self.ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
        self.type_ids = [np.asarray(e.type_ids, dtype=np.int64) for e in encs]
        self.labels = torch.tensor(examples.labels, dtype=torch.long)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_examples = len(examples)
        self.epoch = 0

    def __iter__(self) -> Iterator[Batch]:
        order = self.epoch_order()
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size].tolist()
            lo, hi = shard_bounds(len(idx), self.rank, self.world_size)
            # pad to the longest example of the whole global batch so ranks see the same shapes
            width = max(len(self.ids[j]) for j in idx)
            mine = idx[lo:hi]
            ids = torch.full((len(mine), width), PAD_ID, dtype=torch.long)
            types = torch.zeros((len(mine), width), dtype=torch.long)
            mask = torch.zeros((len(mine), width), dtype=torch.long)
            for r, j in enumerate(mine):
                k = len(self.ids[j])
                ids[r, :k] = torch.from_numpy(self.ids[j])
                types[r, :k] = torch.from_numpy(self.type_ids[j])
                mask[r, :k] = 1
            yield Batch((ids, mask, types), self.labels[mine])
