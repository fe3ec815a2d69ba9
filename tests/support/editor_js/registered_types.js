() => Object.fromEntries(Object.entries(LiteGraph.registered_node_types)
.map(([name, type]) => [name, type.category]))
