// Layer & Sketch: image previews on nodes drawn over a checkerboard, so transparency shows as
// transparency (the editor otherwise draws previews straight onto the node's flat colour).
// Opaque pictures cover the board completely, so they look exactly as before.
import { app } from "../../scripts/app.js";

const SETTING = "LayerSketch.CheckerboardPreviews";
const CELL = 8;
const LIGHT = "#cdcdcd";
const DARK = "#a0a0a0";

let tile = null;

function checkerTile() {
  if (!tile) {
    tile = document.createElement("canvas");
    tile.width = tile.height = 2 * CELL;
    const ctx = tile.getContext("2d");
    ctx.fillStyle = LIGHT;
    ctx.fillRect(0, 0, 2 * CELL, 2 * CELL);
    ctx.fillStyle = DARK;
    ctx.fillRect(CELL, 0, CELL, CELL);
    ctx.fillRect(0, CELL, CELL, CELL);
  }
  return tile;
}

function enabled() {
  return app.extensionManager?.setting?.get(SETTING) ?? true;
}

// Runs `draw` with the context's drawImage filling a checkerboard under each of `images` first, at
// exactly the rectangle the editor draws it to (whatever its preview layout).
function withCheckerboardUnder(ctx, images, draw) {
  const hadOwn = Object.prototype.hasOwnProperty.call(ctx, "drawImage");
  const drawImage = ctx.drawImage;
  ctx.drawImage = function (image, ...args) {
    if (images.includes(image) && (args.length === 4 || args.length === 8)) {
      const [x, y, width, height] = args.length === 4 ? args : args.slice(4);
      this.save();
      this.fillStyle = this.createPattern(checkerTile(), "repeat");
      this.fillRect(x, y, width, height);
      this.restore();
    }
    return drawImage.call(this, image, ...args);
  };
  try {
    return draw();
  } finally {
    if (hadOwn) ctx.drawImage = drawImage;
    else delete ctx.drawImage;
  }
}

app.registerExtension({
  name: "LayerSketch.CheckerboardPreviews",
  settings: [
    {
      id: SETTING,
      category: ["Layer & Sketch", "Previews", "Checkerboard"],
      name: "Show image previews on a checkerboard (transparent parts visible)",
      type: "boolean",
      defaultValue: true,
    },
  ],
  beforeRegisterNodeDef(nodeType) {
    const drawWidgets = nodeType.prototype.drawWidgets;
    if (typeof drawWidgets !== "function") return;
    nodeType.prototype.drawWidgets = function (ctx, options) {
      const images = this.imgs;
      if (!images?.length || !enabled()) return drawWidgets.call(this, ctx, options);
      return withCheckerboardUnder(ctx, images, () => drawWidgets.call(this, ctx, options));
    };
  },
});
