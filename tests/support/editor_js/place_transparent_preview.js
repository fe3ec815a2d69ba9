() => {
    const n = app.graph._nodes.find(n => n.type === 'PreviewImage');
    n.title = 'Transparent'; n.pos = [700, 100]; n.size = [400, 460];
    app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];
    app.canvas.setDirty(true, true);
}
