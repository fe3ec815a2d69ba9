title => {
    const node = app.graph._nodes.find(n => n.title === title);
    const [x, y, w, h] = node.getBounding();
    const [left, top] = app.canvas.ds.convertOffsetToCanvas([x, y]);
    const scale = app.canvas.ds.scale;
    const rect = app.canvas.canvas.getBoundingClientRect();
    return {x: rect.left + left, y: rect.top + top, width: w * scale, height: h * scale};
}
