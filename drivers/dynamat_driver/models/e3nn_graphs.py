"""Bitwise-neutral rewrites of e3nn's generated tensor-product code (``e3nn.o3.TensorProduct``), used
by the SevenNet adapter on CPU.

e3nn builds each tensor product as a ``torch.fx`` graph. Two things in that graph cost time
without changing any number:

* dead nodes: outer products built for a general code path and then not used (e3nn's own TODO
  "when eliminate_dead_code() is in PyTorch stable, use that"); they are computed on every call;
* the per-path weights are column slices ``w[:, a:b]`` of one (edges × paths) tensor. Each slice's
  backward allocates a zero tensor of the full (edges × paths) size and copies its columns in,
  and autograd then adds the 15-odd copies: for SevenNet-0 on 32 atoms ~20 % of a force call.
  One ``torch.split`` into the same views has one backward, a concatenation. The first input's
  irreps are column slices of it in the same way (another ~5 %), next to a read of its shape.

The forward values are the same views of the same tensors, and the gradient of every column is
the same number (the old path adds exact zeros to it), so energies, forces and stresses are
bitwise those of the unmodified model (tests/driver/test_driver_stress.py).
"""

from __future__ import annotations

import operator


def _column_slice(node):
    """(a, b) if ``node`` is ``X[:, a:b]`` with integer bounds, else None."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    index = node.args[1]
    if not (isinstance(index, tuple) and len(index) == 2 and index[0] == slice(None, None, None)):
        return None
    s = index[1]
    if not isinstance(s, slice) or s.step not in (None, 1) or not (isinstance(s.start, int) and isinstance(s.stop, int)):
        return None
    return s.start, s.stop


def _reads_shape(node) -> bool:
    """True if ``node`` is ``X.shape`` (fx records it as ``getattr(X, "shape")``)."""
    return node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",)


def _reshape_width(node):
    """W if ``node`` is ``X.reshape(-1, W)`` (how e3nn flattens its inputs and weights), else None."""
    if node.op == "call_method" and node.target == "reshape" and len(node.args) == 3 and node.args[1] == -1:
        width = node.args[2]
        return width if isinstance(width, int) else None
    return None


def split_column_slices(graph) -> int:
    """Replaces the column slices of each ``X.reshape(-1, W)`` that tile [0, W) exactly (and are its
    only users, besides reads of its shape) by one ``torch.split``. Returns how many tensors were rewritten."""
    import torch

    order = {n: i for i, n in enumerate(graph.nodes)}
    changed = 0
    for node in list(graph.nodes):
        width = _reshape_width(node)
        if width is None:
            continue
        # the tensor's shape may be read too (e3nn takes the batch size from it): not a use of its values
        users = [(u, _column_slice(u)) for u in node.users if not _reads_shape(u)]
        if len(users) < 2 or any(span is None or u.args[0] is not node for u, span in users):
            continue
        spans = sorted({span for _, span in users})
        edges = [a for a, _ in spans] + [width]
        if spans[0][0] != 0 or any(b != edges[i + 1] or b <= a for i, (a, b) in enumerate(spans)):
            continue  # gaps or overlaps: leave as is
        with graph.inserting_after(node):
            parts = graph.call_function(torch.split, (node, [b - a for a, b in spans], 1))
        pieces = {}
        anchor = parts
        for i, span in enumerate(spans):
            with graph.inserting_after(anchor):
                anchor = pieces[span] = graph.call_function(operator.getitem, (parts, i))
        for u, span in sorted(users, key=lambda us: order[us[0]]):
            u.replace_all_uses_with(pieces[span])
            graph.erase_node(u)
        changed += 1
    return changed


def streamline_tensor_products(module) -> int:
    """Applies both rewrites to every e3nn TensorProduct under ``module`` (in place); returns the
    number of tensor products rewritten (slices that do not tile their tensor are left as they are)."""
    from torch import fx

    try:
        from e3nn.o3 import TensorProduct
    except ImportError:
        return 0
    n = 0
    for m in module.modules():
        gm = getattr(m, "_compiled_main_left_right", None) if isinstance(m, TensorProduct) else None
        if not isinstance(gm, fx.GraphModule):
            continue
        gm.graph.eliminate_dead_code()
        split_column_slices(gm.graph)
        gm.graph.lint()
        gm.recompile()
        n += 1
    return n


__all__ = ["split_column_slices", "streamline_tensor_products"]
