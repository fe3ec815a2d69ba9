name => {
const title = document.title.replace(/^\*/, '').replace(/ - ComfyUI$/, '');
return (title === name || title.startsWith(`${name} (`)) && app.graph._nodes.length > 0; }
