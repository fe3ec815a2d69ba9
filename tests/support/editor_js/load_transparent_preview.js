name => app.loadApiJson({
    "1": {"class_type": "LoadImage", "inputs": {"image": name}},
    "2": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["1", 0], "alpha": ["1", 1]}},
    "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}, "_meta": {"title": "Transparent"}}
}, "checkerboard")
