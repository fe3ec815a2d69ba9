title => { const node = app.graph._nodes.find(n => n.title === title);
return node?.imgs?.length && node.imgs.every(img => img.complete && img.naturalWidth > 0); }
