"""The lowering core of the torch front ends: one walk over an fx graph that emits IR nodes.

torch.fx's symbolic trace and torch.export's exported program are both fx graphs, so both
front ends are a :class:`Lowering` (naming, emitting, constants, closures, which values carry
relevance) plus a table from their targets (module classes, functions, method names; ATen
ops) to :class:`Handler` s that emit the node for one op. The graph passes after the walk
(BatchNorm folding, the activation bookkeeping, the rule check) and the runner that records
the nodes' values are here too.

Which values carry relevance ("live" values): a float input is live, an integer one (token
ids, masks) is not; an op is live when it reads a live value, or looks up token ids. A value of
integer inputs alone is either an index move of an input on its way to a lookup (mapped as what
it is, taking relevance only through that lookup) or an ``"aux"`` node: computed by the model,
read by the rules that need it, never given relevance; a layer with weights applied to one is
refused by name (:func:`backtrace.inputs.integer_input_error`). A live op that reads an integer
value other than through a lookup reads it through an ``"aux"`` alias, so none of its relevance
lands on the ids.

Adding an op: a rule for its kind (:func:`backtrace.rules.register`, with the kind in
:mod:`backtrace.ops`) and one line in the table of each front end that can produce it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.fx as fx
from torch import Tensor, nn

from backtrace import ops
from backtrace.errors import UnsupportedOperation
from backtrace.inputs import integer_input_error
from backtrace.ir import Graph, Node
from backtrace.rules import RULES

Runner = Callable[[Sequence[Any], set], dict]

OUTPUT_OF_INTEGERS = ("the explained output must be a tensor computed from the float inputs or from embedding "
                      "lookups of token ids (values of integer inputs alone carry no relevance)")


class Unmapped(Exception):
    """Raised by a handler; turned into :class:`UnsupportedOperation` naming the node."""


# --- handlers and tables ------------------------------------------------------------------------

@dataclass(frozen=True)
class Handler:
    """Emits the IR node(s) of one op: ``fn(lowering, fx node, operands)``; ``kinds`` are the op
    kinds it may emit (their traits say whether the op is a layer, an index move, ...)."""

    kinds: tuple[str, ...]
    fn: Callable[["Lowering", fx.Node, list], None]

    def __call__(self, b: "Lowering", n: fx.Node, ins: list) -> None:
        self.fn(b, n, ins)

    def all(self, trait: str) -> bool:
        return all(ops.has(k, trait) for k in self.kinds)


def handler(*kinds: str) -> Callable[[Callable[["Lowering", fx.Node, list], None]], Handler]:
    """Decorator: a function ``(lowering, node, operands)`` as the :class:`Handler` of ``kinds``."""
    return lambda fn: Handler(kinds, fn)


def same(kind: str) -> Handler:
    """The op is ``kind`` applied to its first operand, with no parameters."""
    return Handler((kind,), lambda b, n, ins: b.emit(n, kind, ins[:1]))


def with_fn(kind: str) -> Handler:
    """The op is ``kind`` of its first operand; ``params["fn"]`` re-applies it to one tensor."""
    return Handler((kind,), lambda b, n, ins: b.emit(n, kind, ins[:1], {"fn": b.closure(n)}))


def unlowered(kind: str, why: str) -> Handler:
    """A layer of ``kind`` this front end cannot map yet: refused with ``why`` (and known as a
    layer with weights when it reads integer values)."""

    def refuse(b: "Lowering", n: fx.Node, ins: list) -> None:
        raise Unmapped(why)
    return Handler((kind,), refuse)


def by_target(rows: dict[Any, Handler]) -> dict[Any, Handler]:
    """A table written one line per op kind (a tuple of targets -> handler), one entry per target."""
    table: dict[Any, Handler] = {}
    for targets, h in rows.items():
        for t in targets if isinstance(targets, tuple) else (targets,):
            if t in table:
                raise ValueError(f"target {t!r} is listed twice")
            table[t] = h
    return table


def emitted_kinds(table: dict[Any, Handler]) -> set[str]:
    """Every op kind a table's handlers may emit."""
    return {k for h in table.values() for k in h.kinds}


@handler("getitem")
def getitem(b: "Lowering", n: fx.Node, ins: list) -> None:
    if node_args(n.args[1]):
        raise Unmapped("index depends on other values of the graph")
    b.emit(n, "getitem", ins[:1], {"index": n.args[1]})


@handler("cat")
def cat(b: "Lowering", n: fx.Node, ins: list) -> None:
    tensors = n.args[0] if n.args else n.kwargs["tensors"]
    dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    b.emit(n, "cat", list(tensors), {"dim": int(dim)})


def split(dim_at: int, stack: bool = False) -> Handler:
    """split / chunk (``dim`` at argument ``dim_at``) and unbind (``stack``: the parts are slices)."""

    def emit(b: "Lowering", n: fx.Node, ins: list) -> None:
        dim = n.args[dim_at] if len(n.args) > dim_at else n.kwargs.get("dim", 0)
        b.emit(n, "split", ins[:1], {"dim": int(dim), "stack": stack})
    return Handler(("split",), emit)


def add(sub: bool) -> Handler:
    """``a + b`` / ``a - b`` of tensors and numbers: the numbers are the node's ``constant``."""

    def emit(b: "Lowering", n: fx.Node, ins: list) -> None:
        if n.kwargs.get("alpha", 1) != 1:
            raise Unmapped("add/sub with alpha != 1")
        operands = list(n.args[:2])
        is_tensor = [isinstance(o, fx.Node) and o in b.ir_of for o in operands]
        if any(isinstance(o, fx.Node) and not t for o, t in zip(operands, is_tensor)):
            raise Unmapped("adds a value computed from shapes")
        signs = tuple(-1 if (sub and i == 1) else 1 for i, t in enumerate(is_tensor) if t)
        constant = sum((-1 if (sub and i == 1) else 1) * float(o)
                       for i, (o, t) in enumerate(zip(operands, is_tensor)) if not t)
        b.emit(n, "add", [o for o, t in zip(operands, is_tensor) if t], {"signs": signs, "constant": constant})
    return Handler(("add",), emit)


# --- node parameters (the same whichever front end builds the node) -----------------------------

def as_tuple(v: Any, n: int) -> tuple[int, ...]:
    return tuple(int(i) for i in v) if isinstance(v, (tuple, list)) else (int(v),) * n


def dense_params(weight: Tensor, bias: Optional[Tensor]) -> dict[str, Any]:
    w = weight.detach().clone()
    b = None if bias is None else bias.detach().clone()
    return {"weight": w, "bias": b, "abs_weight": w.abs()}


def conv_params(weight: Tensor, bias: Optional[Tensor], dims: int, stride: Any, padding: Any, dilation: Any,
                groups: int) -> dict[str, Any]:
    p = dense_params(weight, bias)
    stride, dilation = as_tuple(stride, dims), as_tuple(dilation, dims)
    pre_pad = None
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0,) * dims
        elif padding == "same":
            totals = [d * (k - 1) for d, k in zip(dilation, weight.shape[2:])]
            if all(t % 2 == 0 for t in totals):
                padding = tuple(t // 2 for t in totals)
            else:
                pre_pad = []
                for t in reversed(totals):
                    pre_pad += [t // 2, t - t // 2]
                padding = (0,) * dims
        else:
            raise Unmapped(f"padding {padding!r}")
    p.update(dims=dims, stride=stride, padding=as_tuple(padding, dims), dilation=dilation, groups=int(groups),
             pre_pad=pre_pad)
    return p


def maxpool_params(dims: int, kernel: Any, stride: Any, padding: Any, dilation: Any, ceil_mode: bool) -> dict:
    kernel = as_tuple(kernel, dims)
    stride = kernel if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else as_tuple(
        stride, dims)
    return {"dims": dims, "kernel_size": kernel, "stride": stride, "padding": as_tuple(padding, dims),
            "dilation": as_tuple(dilation, dims), "ceil_mode": bool(ceil_mode)}


def module_attr(root: nn.Module, target: str) -> Any:
    """The attribute a ``get_attr`` node names (a dotted path below ``root``)."""
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def node_args(args: Any) -> list[fx.Node]:
    """fx nodes among (possibly nested) args, in order."""
    found: list[fx.Node] = []
    fx.node.map_arg(args, lambda n: found.append(n) or n)
    return found


# --- the walk -----------------------------------------------------------------------------------

class Lowering:
    """Walks an fx graph once and emits IR nodes. ``integer``: input name -> dtype (as the error
    messages name it) of the inputs known to hold integers. A front end says how to read its
    graph (the methods that raise ``NotImplementedError``) and gives its table."""

    how_to = ""                                # appended to an unmapped op's detail

    def __init__(self, gm: fx.GraphModule, integer: Optional[dict[str, Any]] = None) -> None:
        self.gm = gm
        self.integer: dict[str, Any] = dict(integer or {})
        self.nodes: list[Node] = []
        self.ir_of: dict[fx.Node, str] = {}       # fx node -> IR name
        self.used: set[str] = set()
        self.calls: dict[str, int] = {}
        self.live: set[fx.Node] = set()           # values that carry relevance
        self.origin: dict[fx.Node, str] = {}      # values of integer inputs alone -> one such input
        self.index_path: set[fx.Node] = set()     # integer inputs and index moves of them
        self.inert: set[fx.Node] = set()          # index path and aux values: they take no relevance
        self.aliases: dict[fx.Node, str] = {}     # an inert value read by a live op, as an aux node
        self.reading_live = False

    # what a front end says -----------------------------------------------------------------
    def handler_of(self, n: fx.Node) -> Optional[Handler]:
        """The table's handler for ``n`` (``None``: not in the table)."""
        raise NotImplementedError

    def source(self, n: fx.Node) -> str:
        """Where ``n`` comes from in the user's model, for error messages."""
        raise NotImplementedError

    def no_rule(self, n: fx.Node) -> str:
        """The detail of the error for an op missing from the table."""
        return "no rule for this operation"

    def input_name(self, n: fx.Node) -> str:
        """The name of the graph input a placeholder is (the IR input's name)."""
        raise NotImplementedError

    def is_integer_input(self, n: fx.Node, name: str) -> bool:
        return name in self.integer

    def skip(self, n: fx.Node) -> bool:
        """Nodes that are not values of the graph (sizes, export's guards)."""
        return False

    def returned(self, n: fx.Node) -> Any:
        """The value the ``output`` node returns."""
        return n.args[0]

    def name_of(self, n: fx.Node) -> str:
        """The base of the IR name of the node ``n`` maps to."""
        return n.name

    def lookup_indices(self, n: fx.Node) -> Optional[fx.Node]:
        """The token ids ``n`` looks up, when it is a lookup."""
        return None

    def operands(self, n: fx.Node, data: list[fx.Node]) -> list[fx.Node]:
        """What ``n``'s handler is given: its data inputs."""
        return data

    def of_constants(self, n: fx.Node, data: list[fx.Node]) -> None:
        """``n`` reads neither a live value nor an integer input: mapped as it is."""
        self.lower(n, self.operands(n, data))

    def is_layer(self, n: fx.Node) -> bool:
        """A layer with weights (refused on values of integer inputs alone)."""
        h = self.handler_of(n)
        return h is not None and h.all("weights")

    def refuse_integer(self, n: fx.Node, data: list[fx.Node]) -> None:
        """``n`` is a layer reading a value of integer inputs alone: the named error, at the node
        it maps to."""
        self.lower(n, self.operands(n, data))
        node = self.nodes[-1]
        name = self.origin[n]
        raise integer_input_error(name, self.integer[name], node.name, node.kind, node.source)

    # names and nodes -------------------------------------------------------------------------
    def unique(self, base: str) -> str:
        name, k = base, self.calls.get(base, 0)
        while name in self.used:
            k += 1
            name = f"{base}:{k}"
        self.calls[base] = k
        self.used.add(name)
        return name

    def emit(self, n: fx.Node, kind: str, inputs: Sequence[fx.Node], params: Optional[dict[str, Any]] = None,
             base: Optional[str] = None, source: Optional[str] = None) -> None:
        """Add the IR node of ``n``: ``kind`` of ``inputs`` (fx nodes), named after ``base``."""
        params = params or {}
        if kind in ops.CATALOGUE and not set(params) <= set(ops.CATALOGUE[kind].params):
            raise ValueError(f"node {n.name!r}: params {sorted(set(params) - set(ops.CATALOGUE[kind].params))} "
                             f"are not among the parameters of op kind {kind!r} (backtrace.ops)")
        name = self.unique(base or self.name_of(n))
        if source is None:
            source = str(n.target) if n.op == "get_attr" else self.source(n)
        self.nodes.append(Node(name=name, kind=kind, inputs=tuple(self.operand(i) for i in inputs), params=params,
                               source=source, meta={"fx": n.name}))
        self.ir_of[n] = name

    def operand(self, i: fx.Node) -> str:
        """The IR name a node reads ``i`` under: an aux alias when a live op reads an index value."""
        if not (self.reading_live and i in self.index_path):
            return self.ir_of[i]
        if i not in self.aliases:
            name = self.unique(f"{self.ir_of[i]}:aux")
            self.nodes.append(Node(name=name, kind="aux", inputs=(), source=f"integer value {self.ir_of[i]!r}",
                                   meta={"fx": i.name}))
            self.aliases[i] = name
        return self.aliases[i]

    def attr(self, target: str) -> Any:
        return module_attr(self.gm, target)

    def const(self, v: Any) -> Any:
        """A weight argument's value: a parameter or buffer of the model (or a plain value)."""
        if isinstance(v, fx.Node):
            if v.op != "get_attr":
                raise Unmapped("weights must be parameters or buffers of the model")
            return self.attr(str(v.target))
        return v

    def closure(self, n: fx.Node) -> Callable[[Tensor], Tensor]:
        """Re-apply ``n``'s op to one tensor (its first argument), every other argument a constant."""
        rest, kwargs = n.args[1:], dict(n.kwargs)
        if node_args((rest, kwargs)):
            raise Unmapped("its arguments depend on other values of the graph")
        if n.op == "call_method":
            method = n.target
            return lambda t: getattr(t, method)(*rest, **kwargs)
        if n.op == "call_module":
            return self.gm.get_submodule(str(n.target))
        target = n.target
        return lambda t: target(t, *rest, **kwargs)

    def lower(self, n: fx.Node, ins: list[fx.Node]) -> None:
        """Map ``n`` by the table (a missing op or a refused argument: the named error)."""
        try:
            h = self.handler_of(n)
            if h is None:
                raise Unmapped(self.no_rule(n))
            h(self, n, ins)
        except Unmapped as exc:
            raise UnsupportedOperation(n.name, self.source(n), RULES, f"{exc}{self.how_to}") from None

    def aux(self, n: fx.Node) -> None:
        self.emit(n, "aux", [], base=n.name)
        self.inert.add(n)

    # the walk ----------------------------------------------------------------------------------
    def build(self) -> Graph:
        inputs: list[str] = []
        output: Optional[str] = None
        for n in self.gm.graph.nodes:
            if n.op == "output":
                output = self._output(n)
            elif n.op == "placeholder":
                name = self.input_name(n)
                self.emit(n, "input", [], base=name, source=name)
                inputs.append(self.ir_of[n])
                if self.is_integer_input(n, self.ir_of[n]):
                    self.origin[n] = self.ir_of[n]
                    self.index_path.add(n)
                    self.inert.add(n)
                else:
                    self.live.add(n)
            elif self.skip(n):
                continue
            elif n.op == "get_attr":
                self.emit(n, "constant", [], {"value": self.attr(str(n.target))})
            else:
                self._call(n)
        assert output is not None
        return Graph(nodes=self.nodes, inputs=tuple(inputs), output=output)

    def _output(self, n: fx.Node) -> str:
        out = self.returned(n)
        if not isinstance(out, fx.Node) or out not in self.ir_of:
            raise UnsupportedOperation("output", "the model's return value", RULES, "the model must return one tensor")
        if out in self.inert:
            raise UnsupportedOperation("output", "the model's return value", RULES, OUTPUT_OF_INTEGERS)
        return self.ir_of[out]

    def _call(self, n: fx.Node) -> None:
        """Map one call: live when it reads a live value (or looks up ids); else a value of the
        integer inputs alone (an index move of the ids, or ``"aux"``); else computed from
        constants (:meth:`of_constants`)."""
        data = [d for d in node_args((n.args, n.kwargs)) if d in self.ir_of]
        ids = self.lookup_indices(n)
        if any(d in self.live for d in data) or (ids is not None and ids in self.origin):
            self.live.add(n)
            self.reading_live = ids is None          # a lookup reads the ids themselves
            try:
                self.lower(n, self.operands(n, data))
            finally:
                self.reading_live = False
            return
        from_ints = [d for d in data if d in self.origin]
        if not from_ints:
            self.of_constants(n, data)
            return
        self.origin[n] = self.origin[from_ints[0]]
        h = self.handler_of(n)
        if (n.args and n.args[0] in self.index_path) and h is not None and h.all("moves"):
            self.index_path.add(n)                   # token ids moved on their way to a lookup
            self.inert.add(n)
            self.lower(n, self.operands(n, data))
        elif self.is_layer(n):
            self.refuse_integer(n, data)
        else:
            self.aux(n)


# --- graph passes -------------------------------------------------------------------------------

def consumers(nodes: Iterable[Node]) -> dict[str, list[Node]]:
    out: dict[str, list[Node]] = {}
    for n in nodes:
        out.setdefault(n.name, [])
        for i in n.inputs:
            out.setdefault(i, []).append(n)
    return out


def fold_batchnorm(graph: Graph) -> Graph:
    """Fold each BatchNorm whose input is a linear/conv used only by it into that layer."""
    users = consumers(graph.nodes)
    by_name = {n.name: n for n in graph.nodes}
    removed: dict[str, str] = {}
    for bn in graph.nodes:
        if bn.kind != "batch_norm":
            continue
        prev = by_name.get(bn.inputs[0])
        if prev is None or not ops.has(prev.kind, "foldable") or len(users[prev.name]) != 1:
            continue
        scale, shift = bn.params["scale_vec"], bn.params["shift_vec"]
        w = prev.params["weight"]
        if w.shape[0] != scale.shape[0]:
            continue
        shape = (-1,) + (1,) * (w.dim() - 1)
        w = w * scale.reshape(shape).to(w.dtype)
        b = prev.params["bias"]
        b = shift.to(w.dtype) if b is None else b * scale.to(w.dtype) + shift.to(w.dtype)
        prev.params.update(weight=w, bias=b, abs_weight=w.abs())
        prev.meta["fx"] = bn.meta["fx"]
        prev.meta["folded"] = bn.name
        removed[bn.name] = prev.name
    nodes = []
    for n in graph.nodes:
        if n.name in removed:
            continue
        n.inputs = tuple(removed.get(i, i) for i in n.inputs)
        nodes.append(n)
    return Graph(nodes=nodes, inputs=graph.inputs, output=removed.get(graph.output, graph.output))


def mark_activations(graph: Graph) -> None:
    """Record on each linear/conv-like node the activation that consumes its output (sole
    consumer, possibly through Dropout/Identity), which selects its saturation bounds."""
    users = consumers(graph.nodes)
    for n in graph.nodes:
        if not ops.has(n.kind, "records_activation"):
            continue
        cur = n
        while len(users[cur.name]) == 1 and ops.has(users[cur.name][0].kind, "transparent"):
            cur = users[cur.name][0]
        nxt = users[cur.name]
        if len(nxt) == 1 and ops.has(nxt[0].kind, "activation"):
            n.meta["activation"] = nxt[0].kind


def prune_unused(graph: Graph) -> None:
    """Live nodes whose value feeds only aux nodes get no relevance (the ``mean(x^2)`` of
    RMSNorm): they become ``aux`` so that no rule is asked for them."""
    users = consumers(graph.nodes)
    for n in reversed(graph.nodes):
        if n.kind in ops.STRUCTURAL or n.kind == "aux" or n.name == graph.output:
            continue
        if not users[n.name] or all(u.kind == "aux" for u in users[n.name]):
            n.kind, n.inputs, n.params = "aux", (), {}


def check_supported(graph: Graph) -> None:
    """Every op of the graph has a rule."""
    for n in graph.nodes:
        if n.kind not in ops.STRUCTURAL and n.kind not in RULES:
            raise UnsupportedOperation(n.name, n.source, RULES, f"op kind {n.kind!r} has no registered rule")


# --- running ------------------------------------------------------------------------------------

class Recorder(fx.Interpreter):
    """Runs a graph module keeping the values the graph's nodes read (``wanted`` fx node names);
    every other intermediate (e.g. a convolution's output before a folded BatchNorm) is freed
    after its last use, as in a plain forward pass."""

    def __init__(self, gm: fx.GraphModule, wanted: set[str]) -> None:
        super().__init__(gm, garbage_collect_values=True)
        self.wanted = wanted
        self.kept: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        value = super().run_node(n)
        if n.name in self.wanted:
            self.kept[n.name] = value
        return value


def runner(graph: Graph, gm: fx.GraphModule) -> Runner:
    """``run(inputs, wanted)``: runs ``gm`` and returns ``{IR name: value}`` for the IR nodes in
    ``wanted`` (and any other node that shares a recorded value, e.g. a layer with its folded
    BatchNorm)."""
    fx_of = {n.name: n.meta["fx"] for n in graph.nodes if n.kind != "constant"}

    def run(inputs: Sequence[Any], wanted: set) -> dict:
        rec = Recorder(gm, {fx_of[w] for w in wanted if w in fx_of})
        rec.run(*inputs)
        return {n.name: rec.kept[n.meta["fx"]] for n in graph.nodes
                if n.kind != "constant" and n.meta["fx"] in rec.kept}

    return run
