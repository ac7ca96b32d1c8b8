"""Text views of a DAG for people: an indented tree, a resource budget, Graphviz dot."""

from __future__ import annotations

from pipelines.dag import Dag, Ref, Step, memory_bytes

__all__ = ["dag_dot", "dag_tree", "resource_budget"]


def dag_tree(dag: Dag) -> str:
    """The DAG as an indented tree: one block per step, in execution order."""
    nodes = sum(len(dag.node_names(step.name)) for step in dag.steps)
    lines = [f"{dag.name}  ({len(dag.steps)} steps, {nodes} nodes, digest {dag.digest()[:12]})"]
    for i, step in enumerate(dag.steps):
        last = i == len(dag.steps) - 1
        branch, stem = ("└─", "   ") if last else ("├─", "│  ")
        res = step.resources
        gpu = (
            f" gpu={res.gpu}" + (f" ({res.accelerator})" if res.accelerator else "")
            if res.gpu
            else ""
        )
        title = step.name
        if step.fan_out:
            fan = step.fan_out
            title += f" x{len(fan.items)}"
        lines.append(
            f"{branch} {title}  [{step.component}]  cpu={res.cpu:g} memory={res.memory}{gpu}"
        )
        if step.description:
            lines.append(f"{stem}   {step.description}")
        if step.fan_out:
            fan = step.fan_out
            items = ", ".join(str(item) for item in fan.items)
            lines.append(f"{stem}   fan-out: {fan.param} in [{items}], {fan.parallelism} at a time")
        for name, source in step.inputs.items():
            if isinstance(source, Ref):
                collected = " (collected)" if dag.step(source.step).fan_out else ""
                origin = f"{source.step}.{source.output}{collected}"
            else:
                origin = source.uri
            lines.append(f"{stem}   in  {name} <- {origin}")
        lines.append(f"{stem}   out {', '.join(step.outputs)}")
        extras = [f"retries={step.retries}", f"cache={'on' if step.cache else 'off'}"]
        if res.node_selector:
            extras.append("node_selector=" + ",".join(f"{k}={v}" for k, v in res.node_selector))
        if res.tolerations:
            extras.append("tolerations=" + ",".join(t.key for t in res.tolerations))
        if step.timeout_s:
            extras.append(f"timeout={step.timeout_s:g}s")
        lines.append(f"{stem}   {' '.join(extras)}")
    return "\n".join(lines)


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.3g}Gi"


def resource_budget(dag: Dag) -> str:
    """What the run requests: per step (x branches), at most at once, and in total."""
    rows = [("step", "branches", "at once", "cpu", "memory", "gpu")]
    total_cpu = total_mem = total_gpu = 0.0
    peak = ("", 0.0)
    for step in dag.steps:
        res = step.resources
        branches = len(step.fan_out.items) if step.fan_out else 1
        at_once = min(step.fan_out.parallelism, branches) if step.fan_out else 1
        total_cpu += res.cpu * branches
        total_mem += memory_bytes(res.memory) * branches
        total_gpu += res.gpu * branches
        if res.cpu * at_once > peak[1]:
            peak = (step.name, res.cpu * at_once)
        rows.append(
            (step.name, str(branches), str(at_once), f"{res.cpu:g}", res.memory, str(res.gpu))
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    widest = max(dag.steps, key=lambda s: len(s.fan_out.items) if s.fan_out else 1)
    width = len(widest.fan_out.items) if widest.fan_out else 1
    nodes = sum(len(dag.node_names(s.name)) for s in dag.steps)
    lines += [
        f"requests per branch; summed over all {nodes} nodes: "
        f"cpu={total_cpu:g} memory={_gib(total_mem)} gpu={total_gpu:g}",
        f"largest step at once: {peak[0]} with cpu={peak[1]:g}; widest fan-out: {widest.name}"
        f" x{width}",
    ]
    return "\n".join(lines)


def dag_dot(dag: Dag) -> str:
    """Graphviz ``dot`` source: one box per step (fan-outs stacked), edges named by output."""
    lines = [
        f'digraph "{dag.name}" {{',
        "  rankdir=LR;",
        '  node [shape=box, fontname="Helvetica"];',
    ]
    for step in dag.steps:
        lines.append(f'  "{step.name}" [{_dot_label(step)}];')
    for step in dag.steps:
        for name, source in step.inputs.items():
            if isinstance(source, Ref):
                label = source.output if source.output == name else f"{source.output} -> {name}"
                lines.append(f'  "{source.step}" -> "{step.name}" [label="{label}"];')
            else:
                lines.append(f'  "{source.uri}" [shape=note];')
                lines.append(f'  "{source.uri}" -> "{step.name}" [label="{name}"];')
    lines.append("}")
    return "\n".join(lines)


def _dot_label(step: Step) -> str:
    res = step.resources
    detail = f"cpu {res.cpu:g}, {res.memory}" + (f", gpu {res.gpu}" if res.gpu else "")
    if step.fan_out is None:
        return f'label="{step.name}\\n{detail}"'
    fan = step.fan_out
    title = f"{step.name} x{len(fan.items)} ({fan.parallelism} at a time)"
    return f'label="{title}\\n{detail}", shape=box3d'
