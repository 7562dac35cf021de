"""The GAN's two networks. The generator's heads follow the encoder layout; the discriminator has no
cross-example coupling (no batch norm), so per-example gradients are well defined for DP-SGD."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Callable, Collection, Sequence

import numpy as np
import torch
from torch import nn

from tabsynth.encoding import CellSpec, CompactLayout, Span


LATENT_SCALE = 3.0  # the one-hot latent class's value, against Gaussian noise of std 1
SUPPRESSED_LOGIT = -1e4  # a suppressed missing flag's logit: its sigmoid and the sigmoid's gradient are exactly 0


def init_linear(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Linear initialisation, drawn from ``generator`` instead of the global RNG."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            bound = 1.0 / math.sqrt(layer.in_features)
            with torch.no_grad():
                layer.weight.uniform_(-bound, bound, generator=generator)
                if layer.bias is not None:
                    layer.bias.uniform_(-bound, bound, generator=generator)


def _mlp(sizes: Sequence[int], activation: Callable[[], nn.Module], norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers.append(nn.Linear(a, b))
        if norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(activation())
    return layers


def _straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward pass, the gradient of ``soft`` in the backward pass."""
    return hard + soft - soft.detach()


def draws_whole(span: Span) -> bool:
    """Whether the generator draws ``span`` as one of its values (a binary code of two bits or more)."""
    return span.activation == "sigmoid" and span.values is not None and span.width > 1


@dataclass(frozen=True)
class DrawnColumn:
    """A column the generator draws as one of its values (a category, a code drawn whole, a number's
    cell): its logits [start, end) in the raw outputs, its compact field, and its missing flag's raw
    index, dense index and field (None: not nullable)."""

    name: str
    start: int
    end: int
    field: int
    missing_raw: int | None = None
    missing_dense: int | None = None
    missing_field: int | None = None

    @property
    def values(self) -> int:
        return self.end - self.start

    @property
    def size(self) -> int:
        """Its marginal cells: the values, then missing if nullable."""
        return self.values + int(self.missing_raw is not None)


@dataclass(frozen=True)
class DrawnCells:
    """One column's draw: its value one-hot (rows x values) and missing flag (rows x 1, or None)."""

    values: torch.Tensor
    missing: torch.Tensor | None

    @cached_property
    def cells(self) -> torch.Tensor:
        """The drawn marginal cell, one-hot (a missing row's value does not count); computed once."""
        if self.missing is None:
            return self.values
        return torch.cat([(1 - self.missing) * self.values, self.missing], 1)


def topological_order(names: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[str]:
    """``names`` ordered so that every edge's parent comes before its child (ties keep ``names``'
    order); a cycle is refused."""
    remaining, order = list(names), []
    while remaining:
        ready = [name for name in remaining
                 if not any(child == name and parent in remaining for parent, child in edges)]
        if not ready:
            raise ValueError(f"the conditioning edges form a cycle among {sorted(remaining)}")
        order.append(ready[0])
        remaining.remove(ready[0])
    return order


class Scratch:
    """Buffers reused from one sampling batch to the next, by name and shape: memory freshly taken
    from the system costs a page fault per page on first touch (as much as the product filling it)."""

    def __init__(self) -> None:
        self._tensors: dict[tuple, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        key = (name, shape, dtype, device)
        if key not in self._tensors:
            self._tensors[key] = torch.empty(shape, dtype=dtype, device=device)
        return self._tensors[key]


class OutputHeads(nn.Module):
    """Turns raw generator outputs into the encoded space, span by span.

    The raw outputs follow the encoder layout, except that a binary code of n values (two bits or
    more) gets n logits: the generator draws the code's value, as it draws a category, and emits its
    bits. Drawn bit by bit, a row could only hold a sharp value (40 hours) with every bit sharp, and
    a code's bits would be independent of each other given the row (Adult, exact marginals: 2-way
    TVD 0.029 with bits, 0.022 with values). Bits (booleans, missing flags) and categories are drawn
    with logistic / Gumbel noise. In training the draw is exactly discrete in the forward pass (so
    the discriminator cannot tell fakes by softness) and passes the relaxed gradient at
    ``temperature`` backwards (straight-through Gumbel-softmax); ``hard=True`` (sampling) skips the
    relaxation.

    ``edges`` (parent, child) between drawn columns (categories, codes drawn whole, numbers' cells)
    form a DAG: parents are drawn first, and each child's logits (its values' and its missing
    flag's) get a learned weight for each parent's drawn cell (a row of an ``edge_weights`` matrix,
    parent cells by child cells). A child then depends on its parents beyond what the shared input
    carries: a code and its label can agree exactly.
    """

    def __init__(self, layout: Sequence[Span], temperature: float = 0.2,
                 edges: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__()
        self.temperature = temperature
        self.compact = CompactLayout(layout)
        drawn_columns: dict[str, DrawnColumn] = {}
        missing_of: dict[str, tuple[int, int, int]] = {}  # column -> its missing flag's (raw, dense, field)
        number_raw, bit_raw, bit_dense, bit_field = [], [], [], []
        self.softmax_spans: list[tuple[int, int, int]] = []  # categories: (raw start, raw end, dense start)
        self.code_spans: list[tuple[int, int, int, int]] = []  # codes: (raw start, raw end, dense start, bits)
        self.drawn_fields: list[tuple[int, int, int]] = []  # categories and codes: (raw start, raw end, compact field)
        dense_to_raw: dict[int, int] = {}
        raw = field = 0
        for span in layout:
            whole = draws_whole(span)
            width = span.values if whole else span.width
            if span.role == "place":  # not modelled: no raw output
                width = 0
            elif span.activation == "tanh":
                number_raw += range(raw, raw + width)
            elif whole:
                self.code_spans.append((raw, raw + width, span.start, span.width))
                self.drawn_fields.append((raw, raw + width, field))
                self.register_buffer(f"code_bits_{len(self.code_spans) - 1}", _bits_of(width, span.width),
                                     persistent=False)
                drawn_columns[span.column] = DrawnColumn(span.column, raw, raw + width, field)
            elif span.activation == "sigmoid":  # a boolean, missing flag or code of two values: one bit, one field
                if span.width != 1:
                    raise ValueError(f"span {span}: a sigmoid span of several bits must be a binary code (values)")
                bit_raw.append(raw)
                bit_dense.append(span.start)
                bit_field.append(field)
                if span.role == "missing":
                    missing_of[span.column] = (raw, span.start, field)
            else:
                self.softmax_spans.append((raw, raw + width, span.start))
                self.drawn_fields.append((raw, raw + width, field))
                drawn_columns[span.column] = DrawnColumn(span.column, raw, raw + width, field)
            if whole:
                dense_to_raw[span.start] = raw
            elif width:
                dense_to_raw.update({span.start + i: raw + i for i in range(span.width)})
            raw += width
            field += span.fields
        self.raw_dim = raw
        self.dense_to_raw = dense_to_raw
        self.code_starts = {dense for _, _, dense, _ in self.code_spans}
        # Buffers so that the indices follow the module to the training device.
        for name, values in (("number_raw", number_raw), ("number_dense", self.compact.number_dense),
                             ("place_dense", self.compact.place_dense), ("bit_raw", bit_raw), ("bit_dense", bit_dense)):
            self.register_buffer(name, torch.as_tensor(values, dtype=torch.long).clone(), persistent=False)
        self.bit_field = torch.tensor(bit_field, dtype=torch.long)
        self.missing_raw_of = {name: raw_index for name, (raw_index, _, _) in missing_of.items()}
        for name, (raw_index, dense_index, field_index) in missing_of.items():
            if name in drawn_columns:
                drawn_columns[name] = replace(drawn_columns[name], missing_raw=raw_index, missing_dense=dense_index,
                                              missing_field=field_index)
        self._drawable = tuple(drawn_columns)
        self._set_edges(drawn_columns, edges)

    def drawable_columns(self) -> tuple[str, ...]:
        """The columns drawn as one of their values, which conditioning edges may join."""
        return self._drawable

    def _set_edges(self, drawn_columns: dict[str, DrawnColumn], edges: Sequence[tuple[str, str]]) -> None:
        """Check the conditioning graph, order its columns parents first, and make one weight per edge
        (zeros: a new edge changes nothing until trained)."""
        self.edges = tuple((str(parent), str(child)) for parent, child in edges)
        for parent, child in self.edges:
            for name in (parent, child):
                if name not in drawn_columns:
                    raise ValueError(f"column {name!r} cannot be conditioned on or conditioned: the generator "
                                     f"does not draw it as a category or code")
            if parent == child:
                raise ValueError(f"column {parent!r} cannot be conditioned on itself")
        if len(set(self.edges)) != len(self.edges):
            raise ValueError("the conditioning edges repeat an edge")
        involved = [name for name in drawn_columns if any(name in edge for edge in self.edges)]
        self.conditioned = tuple(drawn_columns[name] for name in topological_order(involved, self.edges))
        self.parents = {child: tuple(i for i, (_, c) in enumerate(self.edges) if c == child) for child in involved}
        self.edge_weights = nn.ParameterList(
            nn.Parameter(torch.zeros(drawn_columns[parent].size, drawn_columns[child].size))
            for parent, child in self.edges)
        self.has_children = {parent for parent, _ in self.edges}
        self.children_of = {parent: [c for c in self.conditioned if (parent, c.name) in self.edges]
                            for parent in self.has_children}
        self.parent_columns = parents = [column for column in self.conditioned if column.name in self.has_children]
        self.parents_are_roots = all(not self.parents[column.name] for column in parents)
        # ``_draw_inverse`` of all parents: each parent's values at k * widest + value among their
        # logits side by side, the padding at the index past them (a -inf column)
        widest = max((column.values for column in parents), default=0)
        total = sum(column.values for column in parents)
        index, offset = [], 0
        for column in parents:
            index += [offset + v if v < column.values else total for v in range(widest)]
            offset += column.values
        self.register_buffer("padded_index", torch.tensor(index, dtype=torch.long), persistent=False)
        last = [[column.values - 1] for column in parents]
        self.register_buffer("last_values", torch.tensor(last, dtype=torch.long).reshape(-1, 1), persistent=False)
        # Sampling's one-hot parent cells: each parent's cells stacked in ``parent_columns`` order;
        # per child, the rows of its parents' cells in ``parents`` order (``_draw_conditioned``).
        self.parent_offsets = dict(zip((column.name for column in parents),
                                       np.cumsum([0] + [column.size for column in parents]).tolist()))
        for k, column in enumerate(self.conditioned):
            rows = [self.parent_offsets[self.edges[i][0]] + v for i in self.parents[column.name]
                    for v in range(drawn_columns[self.edges[i][0]].size)]
            self.register_buffer(f"parent_rows_{k}", torch.tensor(rows, dtype=torch.long), persistent=False)
        cuts = {0, self.raw_dim}
        for column in self.conditioned:  # the raw pieces ``condition`` splits into
            cuts.update((column.start, column.end))
            if column.missing_raw is not None:
                cuts.update((column.missing_raw, column.missing_raw + 1))
        cuts = sorted(cuts)
        self.piece_starts, self.piece_widths = cuts[:-1], [b - a for a, b in zip(cuts[:-1], cuts[1:])]

    def set_edge_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Set each edge's weights (parent cells x child cells, as ``edges``)."""
        if len(weights) != len(self.edges):
            raise ValueError(f"{len(weights)} weight matrices for {len(self.edges)} edges")
        with torch.no_grad():
            for parameter, weight in zip(self.edge_weights, weights):
                parameter.copy_(torch.as_tensor(np.asarray(weight), dtype=parameter.dtype))

    def ancestors(self) -> dict[str, frozenset[str]]:
        """Each conditioned column's ancestors in the conditioning graph (parents, their parents, ...)."""
        found: dict[str, frozenset[str]] = {}
        for column in self.conditioned:  # parents first: their ancestors are known
            parents = [self.edges[i][0] for i in self.parents[column.name]]
            found[column.name] = frozenset(parents).union(*(found[p] for p in parents))
        return found

    def condition(self, raw: torch.Tensor, generator: torch.Generator | None, hard: bool = False,
                  inverse: bool = False) -> tuple[torch.Tensor, dict[str, "DrawnCells"]]:
        """Draw the columns other columns are conditioned on, parents first, and add to each child's
        logits (its values' and its missing flag's) the weights of its parents' drawn cells.

        Returns the adjusted raw outputs and, per parent column, its draw: straight-through
        Gumbel-softmax as ``forward`` draws (exact if ``hard``), or with ``inverse`` by inverse CDF,
        straight-through with the probabilities' gradient (cheaper: the marginal fit, which needs no
        draws of the other columns). Without edges: ``raw`` itself and nothing drawn.
        """
        if not self.edges:
            return raw, {}
        with torch.autocast(raw.device.type, enabled=False):  # small products: float32 is faster and exact
            # One split of ``raw`` into pieces and one concatenation back: slicing or indexing ``raw``
            # would each cost a raw-sized gradient (zero-filled, on fresh pages) in the backward pass.
            pieces = dict(zip(self.piece_starts, raw.float().split(self.piece_widths, 1)))
            terms: dict[str, torch.Tensor] = {}
            drawn: dict[str, DrawnCells] = {}
            for column in self.conditioned:
                term = terms.get(column.name)
                if term is not None:
                    pieces[column.start] = pieces[column.start] + term[:, :column.values]
                    if column.missing_raw is not None:
                        pieces[column.missing_raw] = pieces[column.missing_raw] + term[:, column.values:]
                if column.name not in self.has_children:
                    continue
                if inverse and self.parents_are_roots:
                    if not drawn:
                        drawn = self._draw_inverse(self.parent_columns, pieces, generator)
                elif inverse:
                    drawn.update(self._draw_inverse([column], pieces, generator))
                else:
                    values = self._draw(pieces[column.start], generator, hard)
                    missing = (None if column.missing_raw is None
                               else self._draw_bits(pieces[column.missing_raw], generator, hard))
                    drawn[column.name] = DrawnCells(values, missing)
                updates = drawn[column.name].cells @ self.edge_weights_of(column.name)
                children = self.children_of[column.name]
                for child, update in zip(children, updates.split([c.size for c in children], 1)):
                    terms[child.name] = update if child.name not in terms else terms[child.name] + update
            return torch.cat(list(pieces.values()), 1), drawn

    def _draw_inverse(self, columns: Sequence[DrawnColumn], pieces: dict[int, torch.Tensor],
                      generator: torch.Generator | None) -> dict[str, "DrawnCells"]:
        """Draws of ``columns`` by inverse CDF (one uniform per row, not one per value), straight-through
        with the gradient of their probabilities (not of a Gumbel-softmax relaxation).

        ``columns`` is one column, or every parent when no parent has parents: their logits are then
        padded to a common width (``padded_index``, with -inf) and drawn together, a dozen small
        operations fewer per parent in each marginal step."""
        logits = torch.cat([pieces[column.start] for column in columns], 1)
        n, count = len(logits), len(columns)
        if count == 1:
            widest, padded, last = columns[0].values, logits, logits.new_full((1, 1), columns[0].values - 1).long()
        else:
            widest, last = int(self.padded_index.numel()) // count, self.last_values
            padded = torch.cat([logits, logits.new_full((n, 1), -math.inf)], 1).index_select(1, self.padded_index)
        probabilities = torch.softmax(padded.view(n, count, widest), 2)
        with torch.no_grad():
            uniform = torch.rand((n, count, 1), generator=generator, device=logits.device)
            value = torch.minimum((probabilities.cumsum(2) < uniform).sum(2, keepdim=True), last)
            hard = torch.zeros_like(probabilities).scatter_(2, value, 1.0)
        values = _straight_through(hard, probabilities).view(n, count * widest)
        missing = [column for column in columns if column.missing_raw is not None]
        flags = {}
        if missing:
            flag = torch.sigmoid(torch.cat([pieces[column.missing_raw] for column in missing], 1))
            drawn = (torch.rand(flag.shape, generator=generator, device=flag.device) < flag.detach()).to(flag.dtype)
            flags = dict(zip((column.name for column in missing), _straight_through(drawn, flag).split(1, 1)))
        return {column.name: DrawnCells(values[:, k * widest:k * widest + column.values], flags.get(column.name))
                for k, column in enumerate(columns)}

    def edge_weights_of(self, parent: str) -> torch.Tensor:
        """The weights of all edges out of ``parent``, side by side (its children in ``children`` order)."""
        indices = [self.edges.index((parent, child.name)) for child in self.children_of[parent]]
        return torch.cat([self.edge_weights[i] for i in indices], 1)

    def forward(self, raw: torch.Tensor, generator: torch.Generator | None, hard: bool = False) -> torch.Tensor:
        return self.draw(raw, generator, hard)[0]

    def draw(self, raw: torch.Tensor, generator: torch.Generator | None,
             hard: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict[str, "DrawnCells"]]:
        """Encoded rows drawn from ``raw``, the raw outputs adjusted by the conditioning, and the
        conditioning columns' draws (``condition``), which the encoded rows reuse."""
        raw, parents = self.condition(raw, generator, hard)
        drawn_by_start = {self.conditioned_column(name).start: cells.values for name, cells in parents.items()}
        out = raw.new_empty((raw.shape[0], self.compact.dense_dim))
        if len(self.place_dense):  # not modelled: zeros, as ``CompactLayout.expand(places=False)`` gives them
            out[:, self.place_dense] = 0.0
        if len(self.number_raw):
            out[:, self.number_dense] = torch.tanh(raw[:, self.number_raw])
        if len(self.bit_raw):
            out[:, self.bit_dense] = self._draw_bits(raw[:, self.bit_raw], generator, hard)
            for name, cells in parents.items():
                if cells.missing is not None:
                    out[:, self.conditioned_column(name).missing_dense] = cells.missing[:, 0]
        for start, end, dense in self.softmax_spans:
            values = drawn_by_start.get(start)
            if values is None:
                values = self._draw(raw[:, start:end], generator, hard)
            out[:, dense:dense + end - start] = values
        for k, (start, end, dense, width) in enumerate(self.code_spans):
            values = drawn_by_start.get(start)
            if values is None:
                values = self._draw(raw[:, start:end], generator, hard)
            out[:, dense:dense + width] = values @ getattr(self, f"code_bits_{k}")
        return out, raw, parents

    def conditioned_column(self, name: str) -> "DrawnColumn":
        """Where the conditioned column ``name`` lies in the raw outputs and compact fields."""
        return next(column for column in self.conditioned if column.name == name)

    def _draw_bits(self, logits: torch.Tensor, generator: torch.Generator | None, hard: bool) -> torch.Tensor:
        """Logistic draws of independent bits (straight-through at ``temperature`` unless ``hard``)."""
        u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-6, 1 - 1e-6)
        noisy = logits + torch.log(u) - torch.log1p(-u)
        drawn = (noisy > 0).to(logits.dtype)
        return drawn if hard else _straight_through(drawn, torch.sigmoid(noisy / self.temperature))

    def _draw(self, logits: torch.Tensor, generator: torch.Generator | None, hard: bool) -> torch.Tensor:
        """One-hot Gumbel-max draws of ``logits`` (straight-through Gumbel-softmax unless ``hard``)."""
        u = torch.rand(logits.shape, generator=generator, device=logits.device).clamp(1e-10, 1.0)
        noisy = logits - torch.log(-torch.log(u))
        drawn = nn.functional.one_hot(noisy.argmax(1), logits.shape[1]).to(logits.dtype)
        return drawn if hard else _straight_through(drawn, torch.softmax(noisy / self.temperature, 1))

    def raw_cell_specs(self, specs: Sequence[CellSpec]) -> tuple[CellSpec, ...]:
        """The encoder's marginal cells (``Encoder.cell_specs``, in encoded positions) located in the raw
        outputs: a code drawn whole is a softmax over its values there."""
        located = []
        for spec in specs:
            missing = None if spec.missing is None else self.dense_to_raw[spec.missing]
            start = self.dense_to_raw[spec.start]
            if spec.start in self.code_starts:
                located.append(replace(spec, kind="softmax", start=start, end=start + spec.cells, missing=missing))
            else:
                located.append(replace(spec, start=start, end=start + spec.end - spec.start, missing=missing))
        return tuple(located)

    def sample_compact(self, raw: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Hard draws straight into compact fields (codes and integers, no one-hot): for sampling.

        The same distributions as ``forward(hard=True)``, drawn by inverse CDF: one uniform per bit
        and per categorical or code instead of one per value; a number's place in its cell is uniform.
        """
        return self.sample_compact_columns(raw.t().contiguous(), generator)

    def sample_compact_columns(self, columns: torch.Tensor, generator: torch.Generator | None,
                               numbers: torch.Tensor | None = None, out: torch.Tensor | None = None,
                               scratch: Scratch | None = None) -> torch.Tensor:
        """``sample_compact`` of raw outputs given column by column (``columns`` is raw transposed), as
        float32 compact rows; ``numbers``: the scaled numbers' rows of ``columns`` in more precision;
        ``out``: where to write the compact fields (by rows, transposed); ``scratch``: reusable buffers.

        Rows of ``columns`` are contiguous, so every reduction over a span's values runs as a few
        whole-vector operations instead of many short strided ones (about twice as fast on a CPU).
        ``columns`` may be bfloat16: each part is widened to float32 where it is first read.
        """
        n, device = columns.shape[1], columns.device
        scratch = Scratch() if scratch is None else scratch
        if out is None:
            out = torch.empty((self.compact.dim, n), dtype=torch.float32, device=device)
        if len(self.number_raw):
            numbers = columns.index_select(0, self.number_raw) if numbers is None else numbers
            out[self.compact.number_compact.to(device)] = torch.tanh(numbers.float())
        if len(self.place_dense):
            places = torch.rand((len(self.place_dense), n), generator=generator, device=device)
            out[self.compact.place_compact.to(device)] = 2.0 * places - 1.0
        if len(self.bit_raw):
            uniform = torch.rand((len(self.bit_raw), n), generator=generator, device=device)
            probabilities = torch.sigmoid(columns.index_select(0, self.bit_raw).float())
            out[self.bit_field.to(device)] = (uniform < probabilities).float()
        if self.drawn_fields:
            uniform = torch.rand((len(self.drawn_fields), n), generator=generator, device=device)
            conditioned = {column.start for column in self.conditioned}
            for k, (start, end, field) in enumerate(self.drawn_fields):
                if start not in conditioned:
                    self._draw_values(columns[start:end], uniform[k], out[field], scratch)
            if self.edges:
                self._draw_conditioned(columns, uniform, generator, out, scratch)
        return out.t()

    def _draw_conditioned(self, columns: torch.Tensor, uniform: torch.Tensor, generator: torch.Generator | None,
                          out: torch.Tensor, scratch: Scratch) -> None:
        """``sample_compact_columns`` for the conditioned columns, parents first: each child's logits
        (values' and missing flag's) plus its parents' weights at their drawn cells, as one product of
        its weights with its parents' one-hot drawn cells."""
        n, device = columns.shape[1], columns.device
        uniform_of = {field: k for k, (_, _, field) in enumerate(self.drawn_fields)}
        last = self.parent_columns[-1]
        one_hot = scratch.get("parent_cells", (self.parent_offsets[last.name] + last.size, n), torch.float32, device)
        one_hot.zero_()
        widest = max(column.size for column in self.conditioned)
        logits_buffer = scratch.get("conditioned_logits", (widest, n), torch.float32, device)
        own_buffer = scratch.get("own_parent_cells", (len(one_hot), n), torch.float32, device)
        for k, column in enumerate(self.conditioned):
            logits = columns[column.start:column.end]
            if self.parents[column.name]:
                weights = torch.cat([self.edge_weights[i].detach().t() for i in self.parents[column.name]], 1)
                rows = getattr(self, f"parent_rows_{k}")
                own = torch.index_select(one_hot, 0, rows, out=own_buffer[:len(rows)])
                logits = logits_buffer[:column.size]
                logits[:column.values].copy_(columns[column.start:column.end])
                if column.missing_raw is not None:
                    logits[column.values].copy_(columns[column.missing_raw])
                logits.addmm_(weights, own)
                if column.missing_raw is not None:
                    draw = torch.rand(n, generator=generator, device=device)
                    out[column.missing_field] = (draw < torch.sigmoid(logits[column.values])).float()
                logits = logits[:column.values]
            self._draw_values(logits, uniform[uniform_of[column.field]], out[column.field], scratch)
            if column.name in self.has_children:
                cell = out[column.field].long()
                if column.missing_field is not None:
                    cell = torch.where(out[column.missing_field] > 0, column.values, cell)
                one_hot.scatter_(0, (self.parent_offsets[column.name] + cell)[None, :], 1.0)

    def _draw_values(self, logits: torch.Tensor, uniform: torch.Tensor, out: torch.Tensor, scratch: Scratch) -> None:
        """Inverse-CDF draws of one value per column of ``logits`` (values x rows) into ``out`` (rows)."""
        values, n = logits.shape
        widest = max(end - start for start, end, _ in self.drawn_fields)
        weights = scratch.get("weights", (widest, n), torch.float32, logits.device)
        below = scratch.get("below", (widest - 1, n), torch.bool, logits.device)
        # unnormalised float32 weights, then their running sums
        cdf = torch.sub(logits, logits.amax(0).float(), out=weights[:values]).exp_()
        for i in range(1, values):
            cdf[i].add_(cdf[i - 1])
        # The number of values before the last whose cumulative weight lies below the draw
        # (summed as bytes: several times faster than summing booleans).
        torch.lt(cdf[:-1], uniform * cdf[-1], out=below[:values - 1])
        below_bytes = below[:values - 1].view(torch.uint8)
        out.copy_(below_bytes.sum(0, dtype=torch.int16 if values < 2**15 else torch.int32).float())


def _bits_of(values: int, width: int) -> torch.Tensor:
    """(values, width) matrix: row v holds the ``width`` bits of v, lowest first."""
    return ((torch.arange(values)[:, None] >> torch.arange(width)) & 1).float()


GRADIENT_RAMP = 0.5  # of the narrower neighbouring cell: the ramp whose gradient a tanh number's soft cells pass on


class SoftCells(nn.Module):
    """Raw generator outputs -> each row's probability of every one-way marginal cell, differentiably.

    ``specs`` locate the cells in the raw outputs (``OutputHeads.raw_cell_specs``). The probabilities
    are those of the draws ``OutputHeads`` makes (softmax for categories and codes, sigmoid per bit,
    the missing flag's sigmoid in front); a tanh number falls in a cell
    softly, through a logistic ramp at each edge whose scale is 0.05 of the narrower neighbouring
    cell (a value at a cell's centre leaks under 0.01% into its neighbours). Averaged over a batch,
    they estimate the generator's marginals, which the trainer matches to DP measurements.
    """

    def __init__(self, specs: Sequence[CellSpec]) -> None:
        super().__init__()
        self.specs = tuple(specs)
        # Where the spans and missing flags the cells read begin and end in the raw outputs.
        reads = [(spec.start, spec.end) for spec in self.specs]
        reads += [(spec.missing, spec.missing + 1) for spec in self.specs if spec.missing is not None]
        self.edges = {edge for read in reads for edge in read}
        if any(start < edge < end for start, end in reads for edge in self.edges):
            raise ValueError("the marginals' spans overlap")
        for j, spec in enumerate(self.specs):
            if spec.kind == "bits":
                width = spec.end - spec.start
                bits = _bits_of(2**width, width)
                fold = nn.functional.one_hot(torch.arange(2**width).clamp(max=spec.cells - 1), spec.cells).float()
                self.register_buffer(f"bits_{j}", bits, persistent=False)
                self.register_buffer(f"fold_{j}", fold, persistent=False)
            elif spec.kind == "unit":
                edges = torch.tensor((-1.0, *spec.edges, 1.0), dtype=torch.float64)
                widths = edges.diff()
                narrower = torch.minimum(widths[:-1], widths[1:])
                self.register_buffer(f"edges_{j}", edges[1:-1].float(), persistent=False)
                self.register_buffer(f"ramp_{j}", (0.05 * narrower).float(), persistent=False)
                self.register_buffer(f"slope_{j}", (GRADIENT_RAMP * narrower).float(), persistent=False)

    def forward(self, raw: torch.Tensor) -> list[torch.Tensor]:
        # One split into the spans (and missing flags) instead of a slice each: the backward pass then
        # assembles one gradient, not a zero-filled output-sized tensor per marginal.
        edges = sorted({0, raw.shape[1], *self.edges})
        pieces = dict(zip(edges, raw.split([b - a for a, b in zip(edges[:-1], edges[1:])], 1)))
        return [self._cells(j, spec, pieces) for j, spec in enumerate(self.specs)]

    def _cells(self, j: int, spec: CellSpec, pieces: dict[int, torch.Tensor]) -> torch.Tensor:
        block = pieces[spec.start]
        if spec.kind == "softmax":
            probs = torch.softmax(block, 1)
        elif spec.kind == "bits":
            bits = getattr(self, f"bits_{j}")
            log_on, log_off = nn.functional.logsigmoid(block), nn.functional.logsigmoid(-block)
            probs = torch.exp(log_on @ bits.t() + log_off @ (1 - bits).t()) @ getattr(self, f"fold_{j}")
        else:
            value, edges = torch.tanh(block), getattr(self, f"edges_{j}")
            above = torch.sigmoid((value - edges) / getattr(self, f"ramp_{j}"))
            if GRADIENT_RAMP > 0 and torch.is_grad_enabled():
                # The sharp ramp's value, a wide ramp's gradient (straight through): a value deep inside
                # a narrow cell gets almost no gradient from the sharp ramp alone.
                wide = torch.sigmoid((value - edges) / getattr(self, f"slope_{j}"))
                above = above + (wide - wide.detach())
            ones, zeros = torch.ones_like(block), torch.zeros_like(block)
            survival = torch.cat([ones, above, zeros], 1)  # P(value above each edge), -1 and 1 included
            probs = survival[:, :-1] - survival[:, 1:]
        if spec.missing is None:
            return probs
        missing = torch.sigmoid(pieces[spec.missing])
        return torch.cat([(1 - missing) * probs, missing], 1)


class Generator(nn.Module):
    """Noise -> encoded row. Batch statistics are fine here: the generator never sees private data.

    The input is ``noise_dim`` Gaussian values plus, with ``latent_classes`` K, a class drawn
    uniformly from K and fed one-hot: a discrete latent lets the network place sharp clusters (a
    code with its label) that a smooth map of Gaussian noise blurs. In training the class is the
    argmax of K more Gaussian values, so a row stays one Gaussian draw of width ``noise_dim`` + K
    (attribute ``noise_dim``); ``sample`` draws it as one integer instead.
    """

    def __init__(self, noise_dim: int, layout: Sequence[Span], hidden: Sequence[int],
                 temperature: float = 0.2, latent_classes: int = 0, edges: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__()
        self.latent_classes = latent_classes
        self.noise_dim = noise_dim + latent_classes
        self.heads = OutputHeads(layout, temperature, edges)
        self.body = nn.Sequential(*_mlp([self.noise_dim, *hidden], nn.ReLU, norm=True),
                                  nn.Linear(hidden[-1], self.heads.raw_dim))

    def forward(self, noise: torch.Tensor, generator: torch.Generator | None = None,
                hard: bool = False) -> torch.Tensor:
        return self.heads(self.raw(noise), generator, hard=hard)

    def suppress_missing(self, columns: Collection[str]) -> None:
        """Never draw a null in ``columns``: each one's missing-flag logit becomes a constant far below
        zero (its output row zeroed, its bias ``SUPPRESSED_LOGIT``) that no parent's edge moves, so
        the flag's probability and gradient are exactly 0 and training leaves it so."""
        heads, last = self.heads, self.body[-1]
        with torch.no_grad():
            for name in columns:
                raw = heads.missing_raw_of[name]
                last.weight[raw].zero_()
                last.bias[raw] = SUPPRESSED_LOGIT
                for weights, (_, child) in zip(heads.edge_weights, heads.edges):
                    if child == name:
                        weights[:, -1] = 0.0

    def inputs(self, noise: torch.Tensor) -> torch.Tensor:
        """The body's input for a Gaussian draw: its first ``latent_classes`` values -> one-hot of their argmax."""
        if not self.latent_classes:
            return noise
        classes = nn.functional.one_hot(self.latent_class(noise), self.latent_classes).to(noise.dtype)
        return torch.cat([LATENT_SCALE * classes, noise[:, self.latent_classes:]], 1)

    def latent_class(self, noise: torch.Tensor) -> torch.Tensor:
        """Each row's latent class (with ``latent_classes`` > 0): the argmax of its first K Gaussian values."""
        return noise[:, :self.latent_classes].argmax(1)

    def raw(self, noise: torch.Tensor) -> torch.Tensor:
        """The body's outputs before the heads (logits and pre-tanh values)."""
        return self.body(self.inputs(noise))

    def sample(self, n: int, generator: torch.Generator | None = None,
               hidden_dtype: torch.dtype = torch.float32, batch_size: int = 16_384) -> torch.Tensor:
        """``n`` rows in the encoder's compact form, as in eval mode: the fast path for sampling.

        Draws what ``sample_compact`` of a fresh Gaussian draw gives, more cheaply: the latent class
        (uniform, as the argmax of K Gaussian values is) comes from one integer per row. Works in
        batches of ``batch_size`` rows, small enough for their buffers to be reused.
        """
        k = self.latent_classes
        layers = self._sampling_layers(hidden_dtype)
        out = torch.empty((self.heads.compact.dim, n), dtype=torch.float32)
        scratch = Scratch()
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            gaussian = torch.randn((size, self.noise_dim - k), generator=generator,
                                   out=scratch.get("gaussian", (size, self.noise_dim - k), torch.float32, out.device))
            classes = torch.randint(0, k, (size,), generator=generator) if k else None
            self._sample_compact(layers, gaussian, classes, generator, out[:, start:start + size], scratch)
        return out.t()

    def sample_compact(self, noise: torch.Tensor, generator: torch.Generator | None = None,
                       hidden_dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The rows ``heads.sample_compact(raw(noise))`` draws, computed as ``sample`` computes them."""
        classes = self.latent_class(noise) if self.latent_classes else None
        out = torch.empty((self.heads.compact.dim, len(noise)), dtype=torch.float32, device=noise.device)
        self._sample_compact(self._sampling_layers(hidden_dtype), noise[:, self.latent_classes:],
                             classes, generator, out, Scratch())
        return out.t()

    def _sampling_layers(self, hidden_dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The folded layers in ``hidden_dtype`` (the first with its latent-class rows scaled, the last
        transposed) and, last, the float32 output weights (hidden by numbers) and biases of the scaled numbers.

        ``hidden_dtype=torch.bfloat16`` runs the layers in bfloat16 (about twice as fast on CPUs with
        native support): the logits of categories and bits come out in bfloat16, while the scaled
        numbers' outputs are recomputed in float32 (in bfloat16 their values would fall on a coarse
        lattice); the draws are made in float32.
        """
        folded = self.folded_layers()
        layers = [(w.to(hidden_dtype), b.to(hidden_dtype)) for w, b in folded]
        weight, bias = layers[0]
        k = self.latent_classes
        layers[0] = (torch.cat([LATENT_SCALE * weight[:k], weight[k:]]), bias)
        weight, bias = layers[-1]
        layers[-1] = (weight.t().contiguous(), bias[:, None])
        weight, bias = folded[-1]
        numbers = self.heads.number_raw
        layers.append((weight.index_select(1, numbers).contiguous(), bias.index_select(0, numbers)))
        return layers

    def _sample_compact(self, layers: list[tuple[torch.Tensor, torch.Tensor]], gaussian: torch.Tensor,
                        classes: torch.Tensor | None, generator: torch.Generator | None, out: torch.Tensor,
                        scratch: Scratch) -> None:
        """The layers of ``_sampling_layers``, then the heads' compact draws into ``out`` (compact fields by rows).

        The one-hot class times the first layer's weights is one of their rows: a lookup, not a
        product. The output layer is computed transposed, for ``OutputHeads.sample_compact_columns``.
        """
        k = self.latent_classes
        n, device = len(gaussian), gaussian.device
        weight, bias = layers[0]
        hidden = torch.addmm(bias, gaussian.to(weight.dtype), weight[k:],
                             out=scratch.get("hidden0", (n, weight.shape[1]), weight.dtype, device))
        if classes is not None:
            hidden.add_(weight[:k].index_select(0, classes))
        hidden.relu_()
        for i, (weight, bias) in enumerate(layers[1:-2], 1):
            buffer = scratch.get(f"hidden{i % 2}", (n, weight.shape[1]), weight.dtype, device)
            hidden = torch.addmm(bias, hidden, weight, out=buffer).relu_()
        weight, bias = layers[-2]
        columns = torch.addmm(bias, weight, hidden.t(),
                              out=scratch.get("columns", (weight.shape[0], n), weight.dtype, device))
        weight, bias = layers[-1]
        numbers = None
        if len(bias) and weight.dtype != hidden.dtype:
            # Widened as it lies (a transposing copy took a fifth of sampling time); the numbers come out by
            # rows and are read through a transposed view.
            widened = scratch.get("hidden_float32", hidden.shape, torch.float32, device).copy_(hidden)
            numbers = torch.addmm(bias, widened, weight,
                                  out=scratch.get("numbers", (n, len(bias)), torch.float32, device)).t()
        self.heads.sample_compact_columns(columns, generator, numbers, out, scratch)

    def folded_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The eval-mode body as (weight^T, bias) pairs, each batch norm folded into its linear layer."""
        layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        modules = list(self.body)
        for i, module in enumerate(modules):
            if isinstance(module, nn.Linear):
                layers.append((module.weight.detach().t(), module.bias.detach()))
            elif isinstance(module, nn.BatchNorm1d):
                scale = module.weight.detach() / torch.sqrt(module.running_var + module.eps)
                weight, bias = layers[-1]
                layers[-1] = ((weight * scale).contiguous(),
                              (bias - module.running_mean) * scale + module.bias.detach())
            elif not isinstance(module, nn.ReLU) or not isinstance(modules[i - 1], nn.BatchNorm1d):
                raise TypeError(f"cannot fold generator layer {module!r}")
        return layers


class Discriminator(nn.Module):
    """Encoded row -> score; LeakyReLU MLP with no normalisation across examples."""

    def __init__(self, data_dim: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.net = nn.Sequential(*_mlp([data_dim, *hidden], lambda: nn.LeakyReLU(0.2), norm=False),
                                 nn.Linear(hidden[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


__all__ = ["Discriminator", "Generator", "OutputHeads", "SoftCells", "init_linear"]
