"""FASTA files of generated (or real) DNA sequences: an atomic writer, a strict reader, header helpers.

Format written: one record per sequence, a header line `>HEADER` and the sequence on one line:

    >seed0 class=K562_ENCLB843GMH
    ACGT...

The reader also accepts sequences wrapped over several lines, blank lines and Windows line ends;
letters are compared upper-cased, so soft-masked (lower-case) bases are valid. Generated samples use
the header `seed{N} class={cell type}` (`format_header` / `parse_header`); an unconditional network's
records carry no class field.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Sequence

from dnnlib.util import atomic_write

_HEADER = re.compile(r'seed(\d+)(?:\s+class=(\S+))?')


def format_header(seed: int, cell_type: str | None = None) -> str:
    """`seed{N} class={cell type}` (without '>'); `seed{N}` when cell_type is None."""
    if cell_type is not None and (not cell_type or any(c.isspace() for c in cell_type)):
        raise ValueError(f'A cell-type name in a FASTA header must be non-empty without spaces, got {cell_type!r}.')
    return f'seed{int(seed)}' if cell_type is None else f'seed{int(seed)} class={cell_type}'


def parse_header(header: str) -> tuple[int, str | None]:
    """(seed, cell type or None) from a `seed{N} class={cell type}` header (with or without '>')."""
    match = _HEADER.fullmatch(header.lstrip('>').strip())
    if match is None:
        raise ValueError(f'FASTA header {header!r} is not of the form "seed{{N}} class={{cell type}}".')
    return int(match.group(1)), match.group(2)


def sample_records(seeds: Sequence[int], samples: Any, classes: Sequence[int] | None = None,
                   names: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """FASTA records of generated one-hot samples [n, 4, L] (argmax over the 4 rows decodes each position).

    Headers are `seed{N} class={names[c]}` (the class index itself when names are unknown), `seed{N}` for
    an unconditional network (classes None).
    """
    from training.dataset_discrete import decode_dna
    sequences = decode_dna(samples)
    if len(sequences) != len(seeds):
        raise ValueError(f'{len(sequences)} samples for {len(seeds)} seeds.')
    records = []
    for i, (seed, sequence) in enumerate(zip(seeds, sequences)):
        cell_type = None
        if classes is not None:
            c = int(classes[i])
            cell_type = names[c] if names is not None and 0 <= c < len(names) else str(c)
        records.append((format_header(seed, cell_type), sequence))
    return records


def write_fasta(path: str | os.PathLike, records: Iterable[tuple[str, str]]) -> None:
    """Write (header, sequence) records atomically (temporary file + rename); headers without the '>'."""
    lines = []
    for header, sequence in records:
        if not header or '\n' in header or '\r' in header or not header.isascii():
            raise ValueError(f'A FASTA header must be one non-empty line of ASCII text, got {header!r}.')
        if not sequence or not sequence.isascii() or any(c.isspace() for c in sequence):
            raise ValueError(f'The sequence of FASTA record {header!r} is empty or not ASCII letters only.')
        lines.append(f'>{header}\n{sequence}\n')
    with atomic_write(path) as f:
        f.write(''.join(lines).encode('ascii'))


def read_fasta(path: str | os.PathLike, length: int | None = None, alphabet: str = 'ACGT') -> list[tuple[str, str]]:
    """(header, sequence) records of a FASTA file, sequences upper-cased.

    Raises ValueError with one sentence naming the file (and the record) for a file that is not text,
    holds no records, has text before the first header, an empty record, a letter outside `alphabet`,
    or (when `length` is given) a sequence of another length; FileNotFoundError when it does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'FASTA file {path} does not exist.')
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        text = raw.decode('ascii')
    except UnicodeDecodeError:
        raise ValueError(f'{path} is not a FASTA file (it is not plain ASCII text).') from None
    allowed = set(alphabet.upper())
    records: list[tuple[str, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        if line.startswith('>'):
            records.append((line[1:].strip(), []))
        elif not records:
            raise ValueError(f'{path} is not a FASTA file: line {number} comes before the first ">" header.')
        else:
            records[-1][1].append(line.upper())
    if not records:
        raise ValueError(f'{path} holds no FASTA records.')
    result = []
    for header, parts in records:
        sequence = ''.join(parts)
        if not sequence:
            raise ValueError(f'FASTA record {header!r} in {path} has no sequence.')
        bad = set(sequence) - allowed
        if bad:
            raise ValueError(f'FASTA record {header!r} in {path} contains {sorted(bad)[0]!r}, which is not in '
                             f'the alphabet {alphabet}.')
        if length is not None and len(sequence) != length:
            raise ValueError(f'FASTA record {header!r} in {path} has {len(sequence)} letters, not {length}.')
        result.append((header, sequence))
    return result
