"""The class table: class names, colours, stored label values and the ignore index.

A :class:`ClassTable` is read or derived once, when labelled data is opened, and then
travels with the model (JSON, :meth:`ClassTable.to_dict`), so that prediction writes
the same names and colours that training saw. Index *i* of the table is the class
the model calls *i*; ``values[i]`` is how that class is stored in the user's label
rasters (a class code such as 11 or 255), and for colour-coded masks ``colours[i]``
is how it is painted.
"""

import colorsys
import csv
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import LabelError

__all__ = ('DEFAULT_IGNORE_INDEX', 'ClassTable', 'default_palette', 'parse_colour')

#: Mask value of pixels that count for nothing (nodata, unlabelled). 255, not torch's
#: -100, so that masks and predictions fit uint8 GeoTIFFs.
DEFAULT_IGNORE_INDEX = 255

#: Colours of the first classes when none are given (matplotlib's tab10 then the
#: light half of tab20): distinct, and readable on imagery.
_PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150),
    (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)  # fmt: skip

#: Names that mean "no object here": painted black by default.
_BACKGROUND_NAMES = frozenset({'background', 'bg', 'nodata', 'none', 'unlabelled'})

Colour = tuple[int, int, int]


def default_palette(count: int) -> tuple[Colour, ...]:
    """*count* distinct RGB colours: a fixed palette, then golden-angle hues.

    Args:
        count: number of colours.

    Returns:
        (r, g, b) triples in 0..255.
    """
    colours = list(_PALETTE[:count])
    for i in range(len(colours), count):
        hue = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.65, 0.95)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return tuple(colours)


def parse_colour(value: Any) -> Colour:
    """An RGB triple from ``'#rrggbb'``, ``'rrggbb'``, ``'r,g,b'`` or a sequence.

    Args:
        value: the colour as written in a class table.

    Returns:
        (r, g, b) in 0..255.

    Raises:
        LabelError: If *value* is not a colour.
    """
    try:
        if isinstance(value, str):
            text = value.strip()
            if ',' in text or ' ' in text:
                parts = [int(p) for p in text.replace(',', ' ').split()]
            else:
                text = text.removeprefix('#')
                if len(text) not in (6, 8):
                    raise ValueError(text)
                parts = [int(text[i : i + 2], 16) for i in (0, 2, 4)]
        else:
            parts = [int(p) for p in value]
        if len(parts) not in (3, 4) or not all(0 <= p <= 255 for p in parts):
            raise ValueError(parts)
    except (TypeError, ValueError):
        msg = f"{value!r} is not a colour; write '#rrggbb' or 'r,g,b' (0-255)"
        raise LabelError(msg) from None
    return (parts[0], parts[1], parts[2])


@dataclass(frozen=True)
class ClassTable:
    """Classes of a labelled data set, in model index order.

    Attributes:
        names: class names; the model's class *i* is ``names[i]``.
        colours: RGB colour per class (default: :func:`default_palette`, black for
            a class named ``background``).
        values: value storing each class in label rasters (default: 0..K-1).
        ignore_index: mask value of pixels that count for nothing (nodata,
            unlabelled); never a class index.
        ignore_values: stored label values that mean "no label" besides the label
            rasters' nodata value (e.g. 0 in a mask whose classes start at 1).
    """

    names: tuple[str, ...]
    colours: tuple[Colour, ...] = ()
    values: tuple[int, ...] = ()
    ignore_index: int = DEFAULT_IGNORE_INDEX
    ignore_values: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        """Normalise to tuples, fill defaults and check consistency.

        Raises:
            LabelError: If names are empty, blank or repeated, or colours, values
                and names disagree.
            ValueError: If *ignore_index* is a class index.
        """
        names = tuple(str(name) for name in self.names)
        if not names:
            msg = 'a class table needs at least one class'
            raise LabelError(msg)
        blank = [i for i, name in enumerate(names) if not name.strip()]
        if blank:
            msg = f'class names at positions {blank} are empty; name every class'
            raise LabelError(msg)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            msg = f'class names {repeated} appear more than once'
            raise LabelError(msg)
        colours = tuple(parse_colour(c) for c in self.colours)
        if not colours:
            palette = default_palette(len(names))
            colours = tuple(
                (0, 0, 0) if name.lower() in _BACKGROUND_NAMES else colour
                for name, colour in zip(names, palette, strict=True)
            )
        values = tuple(int(v) for v in self.values) or tuple(range(len(names)))
        for what, items in (('colours', colours), ('values', values)):
            if len(items) != len(names):
                msg = f'{len(names)} class names but {len(items)} {what}'
                raise LabelError(msg)
        if len(set(values)) != len(values):
            msg = f'class values {list(values)} repeat a value; give each class its own'
            raise LabelError(msg)
        ignore_values = tuple(int(v) for v in self.ignore_values)
        clash = sorted(set(values) & set(ignore_values))
        if clash:
            msg = f'values {clash} are both class values and ignore values'
            raise LabelError(msg)
        if 0 <= self.ignore_index < len(names):
            msg = (
                f'ignore_index {self.ignore_index} is a class index (0..{len(names) - 1}); '
                'choose a value outside, e.g. 255 or -100'
            )
            raise ValueError(msg)
        object.__setattr__(self, 'names', names)
        object.__setattr__(self, 'colours', colours)
        object.__setattr__(self, 'values', values)
        object.__setattr__(self, 'ignore_values', ignore_values)

    @property
    def num_classes(self) -> int:
        """Number of classes (K); class indices run 0..K-1."""
        return len(self.names)

    def index(self, name: str) -> int:
        """Index of the class called *name*.

        Raises:
            LabelError: If no class has that name.
        """
        try:
            return self.names.index(name)
        except ValueError:
            msg = f'no class {name!r}; the classes are {list(self.names)}'
            raise LabelError(msg) from None

    # -- building ----------------------------------------------------------------

    @classmethod
    def from_labels(
        cls,
        labels: Iterable[Any],
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        numeric: bool = True,
    ) -> 'ClassTable':
        """The table of the distinct class labels of a column or folder list.

        Text sorts naturally (``class2`` before ``class10``); a column of integers
        sorts numerically and keeps them as the stored values.

        Args:
            labels: class label of each sample (repeats allowed).
            ignore_index: see the class attributes.
            numeric: read integer labels as class codes (False for folder names,
                which stay as written: ``01`` is not ``1``).

        Returns:
            the table.
        """
        distinct = set(labels)
        if numeric and distinct and all(_is_integer(v) for v in distinct):
            ordered = sorted({int(v) for v in distinct})
            return cls(
                names=tuple(str(v) for v in ordered),
                values=tuple(ordered),
                ignore_index=ignore_index,
            )
        names = sorted({str(v) for v in distinct}, key=_natural_key)
        return cls(names=tuple(names), ignore_index=ignore_index)

    def index_of_label(self, label: Any, source: str = 'the labels') -> int:
        """Index of a sample's class label, given as a name or a stored value.

        Args:
            label: a class name, or an integer class value (``3``, ``3.0``, ``'3'``).
            source: where the label comes from, for the error message.

        Returns:
            the class index.

        Raises:
            LabelError: If the label is no class of the table.
        """
        text = str(label).strip()
        if text in self.names:
            return self.names.index(text)
        if _is_integer(label):
            number = int(float(label))
            if str(number) in self.names:
                return self.names.index(str(number))
            if number in self.values:
                return self.values.index(number)
        msg = (
            f'{source}: class {label!r} is not in the class table {list(self.names)}; '
            'add it to the table'
        )
        raise LabelError(msg)

    # -- encoding stored labels into class indices ------------------------------

    def encode_values(
        self,
        raw: npt.NDArray[Any],
        unlabelled: npt.NDArray[np.bool_] | None = None,
        source: str = 'the labels',
    ) -> npt.NDArray[np.int64]:
        """Class indices of stored label values.

        Args:
            raw: stored values, any shape.
            unlabelled: pixels known to carry no label (nodata, outside the label
                file), which become :attr:`ignore_index`.
            source: what the values come from, for the error message.

        Returns:
            int64 array of the shape of *raw*.

        Raises:
            LabelError: If a labelled pixel holds a value that is no class's value.
        """
        raw = np.asarray(raw)
        missing = np.zeros(raw.shape, bool) if unlabelled is None else unlabelled
        if self.ignore_values:
            missing = missing | np.isin(raw, self.ignore_values)
        if raw.dtype.kind == 'f':
            missing = missing | ~np.isfinite(raw)
        order = np.argsort(self.values)
        known = np.asarray(self.values, dtype=np.int64)[order]
        filled = np.where(missing, known[0], raw)
        if filled.dtype.kind == 'f':
            integral = filled == np.round(filled)
            codes = np.where(integral, filled, known[0]).astype(np.int64)
        else:
            integral = np.ones(raw.shape, bool)
            codes = filled.astype(np.int64)
        position = np.clip(np.searchsorted(known, codes), 0, len(known) - 1)
        bad = ~((known[position] == codes) & integral) & ~missing
        if bad.any():
            self._raise_unknown(np.unique(raw[bad]), source)
        out = order[position].astype(np.int64)
        out[missing] = self.ignore_index
        return out

    def encode_colours(
        self,
        rgb: npt.NDArray[Any],
        unlabelled: npt.NDArray[np.bool_] | None = None,
        source: str = 'the labels',
    ) -> npt.NDArray[np.int64]:
        """Class indices of a colour-coded mask.

        Args:
            rgb: (3, H, W) or more bands; the first three are red, green, blue, a
                fourth (alpha) of 0 marks unlabelled pixels.
            unlabelled: (H, W) pixels known to carry no label.
            source: what the mask comes from, for the error message.

        Returns:
            int64 (H, W) array.

        Raises:
            LabelError: If a labelled pixel has a colour that is no class's colour.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim != 3 or rgb.shape[0] < 3:
            msg = f'{source} is not an RGB colour mask (shape {rgb.shape})'
            raise LabelError(msg)
        missing = np.zeros(rgb.shape[1:], bool) if unlabelled is None else unlabelled
        if rgb.shape[0] >= 4:
            missing = missing | (rgb[3] == 0)
        channels = rgb[:3].astype(np.int64)
        codes = (channels[0] << 16) | (channels[1] << 8) | channels[2]
        table = ClassTable(
            names=self.names,
            colours=self.colours,
            values=tuple((r << 16) | (g << 8) | b for r, g, b in self.colours),
            ignore_index=self.ignore_index,
        )
        try:
            return table.encode_values(codes, missing, source)
        except LabelError:
            bad = np.unique(codes[~missing & ~np.isin(codes, table.values)])
            shown = ', '.join(f'#{int(c):06x}' for c in bad[:10])
            listed = ', '.join(
                f'{name} #{(r << 16) | (g << 8) | b:06x}'
                for name, (r, g, b) in zip(self.names, self.colours, strict=True)
            )
            msg = (
                f'{source} holds colours {shown} that are not in the class table '
                f'({listed}); add them to the class/colour table'
            )
            raise LabelError(msg) from None

    def _raise_unknown(self, values: npt.NDArray[Any], source: str) -> None:
        """Raise the error for stored values outside the table."""
        shown = ', '.join(f'{v:g}' for v in values[:10].tolist())
        if len(values) > 10:
            shown += f', ... ({len(values)} values)'
        msg = (
            f'{source} holds values {shown} that are not in the class table '
            f'(values {list(self.values)} for {list(self.names)}); add these classes '
            'to the class table, or list them as ignore values'
        )
        raise LabelError(msg)

    # -- serialisation -----------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; colours as ``'#rrggbb'``."""
        return {
            'names': list(self.names),
            'colours': [f'#{r:02x}{g:02x}{b:02x}' for r, g, b in self.colours],
            'values': list(self.values),
            'ignore_index': self.ignore_index,
            'ignore_values': list(self.ignore_values),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'ClassTable':
        """Inverse of :meth:`to_dict` (``colours``/``values`` optional).

        Raises:
            LabelError: If *data* has no ``names``.
        """
        if 'names' not in data:
            msg = f'a class table needs "names"; got keys {sorted(data)}'
            raise LabelError(msg)
        return cls(
            names=tuple(data['names']),
            colours=tuple(data.get('colours') or data.get('colors') or ()),
            values=tuple(data.get('values') or ()),
            ignore_index=int(data.get('ignore_index', DEFAULT_IGNORE_INDEX)),
            ignore_values=tuple(data.get('ignore_values') or ()),
        )

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON document."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> 'ClassTable':
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the table as JSON to *path*."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def read(
        cls, path: str | os.PathLike[str], ignore_index: int = DEFAULT_IGNORE_INDEX
    ) -> 'ClassTable':
        """Read a class (and colour) table a user wrote.

        JSON: the :meth:`to_dict` form, a list of ``{"name", "colour", "value"}``
        objects, or a ``{name: colour}`` mapping. CSV (or tab separated text): a
        header naming a ``name``/``class``/``label`` column and, optionally,
        ``colour``/``color`` (``#rrggbb``) or ``r``, ``g``, ``b`` columns and a
        ``value`` column. Rows are in class index order.

        Args:
            path: the table file.
            ignore_index: ignore index unless the file sets one.

        Returns:
            the table.

        Raises:
            LabelError: If the file is not a class table.
        """
        path = Path(path)
        text = path.read_text(encoding='utf-8-sig')
        if path.suffix.lower() == '.json':
            data = json.loads(text)
            if isinstance(data, dict) and 'names' in data:
                data.setdefault('ignore_index', ignore_index)
                return cls.from_dict(data)
            if isinstance(data, dict):
                rows = [{'name': k, 'colour': v} for k, v in data.items()]
            elif isinstance(data, list):
                rows = data
            else:
                msg = f'{path} is not a class table (expected an object or a list)'
                raise LabelError(msg)
        else:
            lines = text.splitlines()
            try:
                dialect: Any = csv.Sniffer().sniff(lines[0] if lines else '', ',;\t')
            except csv.Error:  # a single column: nothing to sniff
                dialect = 'excel'
            rows = list(csv.DictReader(lines, dialect=dialect))
        return cls._from_rows(rows, str(path), ignore_index)

    @classmethod
    def _from_rows(
        cls, rows: Sequence[dict[str, Any]], source: str, ignore_index: int
    ) -> 'ClassTable':
        """A table from rows of name, colour and value fields."""
        if not rows:
            msg = f'{source} lists no class'
            raise LabelError(msg)
        keys = {key.strip().lower(): key for key in rows[0] if key is not None}
        name_key = _first(keys, ('name', 'class', 'class_name', 'classname', 'label'))
        if name_key is None:
            msg = (
                f'{source} has no name column (name, class or label); its columns '
                f'are {list(rows[0])}'
            )
            raise LabelError(msg)
        colour_key = _first(keys, ('colour', 'color', 'rgb', 'hex'))
        rgb_keys = [keys.get(c) for c in ('r', 'g', 'b')]
        value_key = _first(keys, ('value', 'code', 'id', 'index'))
        names, colours, values = [], [], []
        for row in rows:
            names.append(str(row[name_key]).strip())
            if colour_key is not None:
                colours.append(parse_colour(row[colour_key]))
            elif all(rgb_keys):
                colours.append(parse_colour([row[k] for k in rgb_keys if k]))
            if value_key is not None:
                values.append(int(row[value_key]))
        return cls(
            names=tuple(names),
            colours=tuple(colours),
            values=tuple(values),
            ignore_index=ignore_index,
        )


def _first(keys: dict[str, str], candidates: Sequence[str]) -> str | None:
    """The original spelling of the first of *candidates* among lower-cased *keys*."""
    for candidate in candidates:
        if candidate in keys:
            return keys[candidate]
    return None


def _is_integer(value: Any) -> bool:
    """Whether a label is an integer (1, 1.0, '1'), not text or a fraction."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | np.integer):
        return True
    if isinstance(value, float | np.floating):
        return float(value).is_integer()
    if isinstance(value, str):
        return value.strip().lstrip('-').isdigit()
    return False


def _natural_key(text: str) -> list[Any]:
    """Sort key that puts ``class2`` before ``class10``."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r'(\d+)', text)]
