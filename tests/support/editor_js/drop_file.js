([name, text]) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([text], name, {type: "application/json"}));
    document.querySelector("#graph-canvas").dispatchEvent(
        new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
}
