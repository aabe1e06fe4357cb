"""FASTA files of generated (or real) DNA sequences, read and written with Biopython; header helpers.

Format written (Biopython's `fasta-2line`): one record per sequence, a header line `>HEADER` and the
sequence on one line:

    >seed0 class=K562_ENCLB843GMH
    ACGT...

The reader (Biopython's `fasta` parser) also accepts sequences wrapped over several lines, blank lines and
Windows line ends, and ignores whitespace inside a sequence line; letters are compared upper-cased, so
soft-masked (lower-case) bases are valid. On top of Biopython it refuses, each with one sentence naming the
file (and the record or line): a file that is not ASCII text, text before the first header, an empty
record, a letter outside the alphabet, a sequence of the wrong length. Generated samples use the header
`seed{N} class={cell type}` (`format_header`; `training.metrics.dna_eval.header_cell_type` reads the class
back); an unconditional network's records carry no class field.

Biopython is the optional `dna` extra; without it `read_fasta`, `write_fasta` and `require_biopython`
raise `MissingPackageError` (a ValueError), one sentence that names `pip install -e ".[dna]"`. There is no
hand-written fallback: one reader and one writer, the ones genomics users already trust.
"""
from __future__ import annotations

import io
import os
from types import ModuleType
from typing import Any, Iterable, Sequence

from dnnlib.util import atomic_write
from training.optional import require


def require_biopython() -> ModuleType:
    """Biopython's `Bio.SeqIO`; MissingPackageError (one sentence with the install command) without Biopython.

    CLIs call it before sampling, so that a missing extra fails at once rather than after the work is done.
    """
    return require('Bio.SeqIO', 'Reading and writing FASTA files')


def format_header(seed: int, cell_type: str | None = None) -> str:
    """`seed{N} class={cell type}` (without '>'); `seed{N}` when cell_type is None."""
    if cell_type is not None and (not cell_type or any(c.isspace() for c in cell_type)):
        raise ValueError(f'A cell-type name in a FASTA header must be non-empty without spaces, got {cell_type!r}.')
    return f'seed{int(seed)}' if cell_type is None else f'seed{int(seed)} class={cell_type}'


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
    """Write (header, sequence) records atomically (temporary file + rename); headers without the '>'.

    Each record becomes a Biopython SeqRecord (id = the header's first word, description = the header) and
    Biopython's `fasta-2line` writer prints `>HEADER` and the unwrapped sequence. ValueError for a header
    that is blank, not one line or not ASCII, and for a sequence that is empty or not ASCII letters.
    """
    seqio = require_biopython()
    from Bio.Seq import Seq
    from Bio.SeqRecord import SeqRecord
    seq_records = []
    for header, sequence in records:
        if not header.strip() or '\n' in header or '\r' in header or not header.isascii():
            raise ValueError(f'A FASTA header must be one non-empty line of ASCII text, got {header!r}.')
        if not sequence or not sequence.isascii() or any(c.isspace() for c in sequence):
            raise ValueError(f'The sequence of FASTA record {header!r} is empty or not ASCII letters only.')
        seq_records.append(SeqRecord(Seq(sequence), id=header.split()[0], description=header))
    text = io.StringIO()
    seqio.write(seq_records, text, 'fasta-2line')
    with atomic_write(path) as f:
        f.write(text.getvalue().encode('ascii'))


def read_fasta(path: str | os.PathLike, length: int | None = None, alphabet: str = 'ACGT') -> list[tuple[str, str]]:
    """(header, sequence) records of a FASTA file (Biopython's `fasta` parser), sequences upper-cased.

    Raises ValueError with one sentence naming the file (and the record) for a file that is not text,
    holds no records, has text before the first header, an empty record, a letter outside `alphabet`,
    or (when `length` is given) a sequence of another length; FileNotFoundError when it does not exist;
    MissingPackageError (a ValueError) without Biopython.
    """
    seqio = require_biopython()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'FASTA file {path} does not exist.')
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        text = raw.decode('ascii')
    except UnicodeDecodeError:
        raise ValueError(f'{path} is not a FASTA file (it is not plain ASCII text).') from None
    # Biopython's parser refuses anything before the first '>' (blank lines too) with a long message of
    # its own; blank lines are fine here, any other text is refused below with its line number.
    lines = text.splitlines()
    first = next((number for number, line in enumerate(lines, start=1) if line.strip()), None)
    if first is None:
        raise ValueError(f'{path} holds no FASTA records.')
    if not lines[first - 1].lstrip().startswith('>'):
        raise ValueError(f'{path} is not a FASTA file: line {first} comes before the first ">" header.')
    allowed = set(alphabet.upper())
    result = []
    for record in seqio.parse(io.StringIO('\n'.join(lines[first - 1:]).lstrip()), 'fasta'):
        header, sequence = record.description.strip(), str(record.seq).upper()
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
