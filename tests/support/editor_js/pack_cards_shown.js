names => {
    const cards = [...document.querySelectorAll("[data-testid^='template-workflow-']")];
    return cards.length && cards.every(c => names.includes(c.dataset.testid.replace('template-workflow-', '')));
}
