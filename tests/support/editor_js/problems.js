([stores, allowedModelInputs]) => {
    const pinia = document.querySelector('#vue-app')?.__vue_app__?.config?.globalProperties?.$pinia;
    const store = id => pinia?._s?.get(id);
    const problems = stores.filter(id => !store(id)).map(id => `the editor has no store ${id}: see support/editor.py`);
    for (const m of store('missingModel')?.missingModelCandidates ?? [])
        if (m.isMissing !== false && !allowedModelInputs.includes(m.widgetName))
            problems.push(`missing model file: ${m.nodeType}.${m.widgetName} = ${m.name}`);
    for (const t of store('missingNodesError')?.missingNodesError?.nodeTypes ?? [])
        problems.push(`missing node type: ${typeof t === 'string' ? t : t.type}`);
    for (const m of store('missingMedia')?.missingMediaCandidates ?? [])
        if (m.isMissing !== false) problems.push(`missing picture: ${m.nodeType}.${m.widgetName} = ${m.name}`);
    const run = store('executionError');
    if (run?.lastPromptError) problems.push(`prompt error: ${JSON.stringify(run.lastPromptError)}`);
    if (run?.lastExecutionError) problems.push(`run error: ${JSON.stringify(run.lastExecutionError)}`);
    for (const [id, e] of Object.entries(run?.lastNodeErrors ?? {}))
        problems.push(`node ${id}: ${JSON.stringify(e)}`);
    return problems;
}
