(missingAllowed) => {
    const nodes = app.graph._nodes;
    const boxes = nodes.map(n => [n, n.getBounding()]);
    const overlaps = [];
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
        const [a, ra] = boxes[i], [b, rb] = boxes[j];
        if (ra[0] < rb[0] + rb[2] && rb[0] < ra[0] + ra[2] && ra[1] < rb[1] + rb[3] && rb[1] < ra[1] + ra[3])
            overlaps.push(`${a.title} ${Array.from(ra)} / ${b.title} ${Array.from(rb)}`);
    }
    const cramped = nodes
        .filter(n => { const min = n.computeSize(); return n.size[0] + 1 < min[0] || n.size[1] + 1 < min[1]; })
        .map(n => `${n.title}: ${Array.from(n.size)} < ${Array.from(n.computeSize())}`);
    const invalid = [];
    for (const n of nodes) for (const w of n.widgets ?? []) {
        const values = w.options?.values;
        if (Array.isArray(values) && !values.includes(w.value) && !missingAllowed.includes(w.name))
            invalid.push(`${n.title}.${w.name} = ${w.value}`);
    }
    const randomized = nodes.flatMap(n => (n.widgets ?? []).filter(w => w.name === "control_after_generate"
        && w.value !== "fixed").map(w => `${n.title}: ${w.value}`));
    const unknown = nodes.filter(n => !(n.type in LiteGraph.registered_node_types)).map(n => n.type);
    return {overlaps, cramped, invalid, randomized, unknown, types: nodes.map(n => n.type)};
}
