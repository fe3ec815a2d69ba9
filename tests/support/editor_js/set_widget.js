([title, name, value]) => {
    const node = app.graph._nodes.find(n => n.title === title);
    node.widgets.find(w => w.name === name).value = value;
}
