() => {
    const imgs = [...document.querySelectorAll('.lg-node img')];
    return document.querySelector('.lg-node') && imgs.every(i => i.complete && i.naturalWidth > 0);
}
