// Layer & Sketch: image previews on nodes drawn over a checkerboard, so transparency shows as
// transparency (the editor otherwise draws previews straight onto the node's flat colour).
// Opaque pictures cover the board completely, so they look exactly as before.
//
// Two ways the editor shows previews, both handled:
// - the canvas (classic node view): the editor draws each preview with the canvas context's
//   drawImage, right away (editor 1.32) or a moment later in a microtask (1.47: a Chrome GPU
//   work-around). The context nodes draw on gets a drawImage that fills a checkerboard under a
//   preview first, at exactly the rectangle the editor draws it to, whatever its preview layout.
// - the Vue node view ("Nodes 2.0", DOM nodes): previews are <img> elements; each gets the board as
//   its CSS background, limited to the picture itself (object-fit: contain leaves bars around it).
import { app } from "../../scripts/app.js";

const SETTING = "LayerSketch.CheckerboardPreviews";
const CELL = 8;
const LIGHT = "#cdcdcd";
const DARK = "#a0a0a0";
const BOARD_CSS = `conic-gradient(${DARK} 25%, ${LIGHT} 0 50%, ${DARK} 0 75%, ${LIGHT} 0) 0 0 / ${2 * CELL}px ${2 * CELL}px`;
// The Vue node view's preview pictures (ImagePreview.vue: the gallery's main image, the grid's cells).
const VUE_PREVIEWS = ".lg-node .image-preview img";

const previews = new WeakSet(); // the image elements nodes show as previews
const WRAPPED = Symbol("LayerSketch.checkerboard");
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

// The context's drawImage, once per context: a preview picture gets the board under it first.
function wrapContext(ctx) {
  if (ctx[WRAPPED]) return;
  const drawImage = ctx.drawImage;
  ctx.drawImage = function (image, ...args) {
    if (previews.has(image) && (args.length === 4 || args.length === 8) && enabled()) {
      const [x, y, width, height] = args.length === 4 ? args : args.slice(4);
      this.save();
      this.fillStyle = this.createPattern(checkerTile(), "repeat");
      this.fillRect(x, y, width, height);
      this.restore();
    }
    return drawImage.call(this, image, ...args);
  };
  ctx[WRAPPED] = true;
}

// Vue node view: the board as the picture's background, padded in to the picture's own rectangle.
function boardUnder(img, on = enabled()) {
  if (!on || !img.naturalWidth) {
    img.style.removeProperty("background");
    img.style.removeProperty("padding");
    return;
  }
  const { clientWidth: width, clientHeight: height, naturalWidth, naturalHeight } = img;
  const scale = Math.min(width / naturalWidth, height / naturalHeight);
  const padX = Math.max(0, (width - naturalWidth * scale) / 2);
  const padY = Math.max(0, (height - naturalHeight * scale) / 2);
  img.style.setProperty("box-sizing", "border-box");
  img.style.setProperty("padding", `${padY}px ${padX}px`);
  img.style.setProperty("background", BOARD_CSS);
  img.style.setProperty("background-origin", "content-box");
  img.style.setProperty("background-clip", "content-box");
}

function watchVuePreviews() {
  const resized = new ResizeObserver((entries) => entries.forEach((entry) => boardUnder(entry.target)));
  const seen = new WeakSet();
  const attach = (root) => {
    const found = root.matches?.(VUE_PREVIEWS) ? [root] : [...(root.querySelectorAll?.(VUE_PREVIEWS) ?? [])];
    for (const img of found) {
      if (seen.has(img)) continue;
      seen.add(img);
      img.addEventListener("load", () => boardUnder(img));
      resized.observe(img, { box: "border-box" });
      boardUnder(img);
    }
  };
  new MutationObserver((mutations) => {
    for (const mutation of mutations) mutation.addedNodes.forEach(attach);
  }).observe(document.body, { childList: true, subtree: true });
  attach(document.body);
  return (on) => document.querySelectorAll(VUE_PREVIEWS).forEach((img) => boardUnder(img, on));
}

let redrawVuePreviews = () => {};

app.registerExtension({
  name: "LayerSketch.CheckerboardPreviews",
  settings: [
    {
      id: SETTING,
      category: ["Layer & Sketch", "Previews", "Checkerboard"],
      name: "Show image previews on a checkerboard (transparent parts visible)",
      type: "boolean",
      defaultValue: true,
      // Called before the new value is stored: the Vue view's pictures are told it.
      onChange: (on) => {
        redrawVuePreviews(on !== false);
        app.canvas?.setDirty(true, true);
      },
    },
  ],
  setup() {
    redrawVuePreviews = watchVuePreviews();
  },
  beforeRegisterNodeDef(nodeType) {
    const drawWidgets = nodeType.prototype.drawWidgets;
    if (typeof drawWidgets !== "function") return;
    nodeType.prototype.drawWidgets = function (ctx, options) {
      if (this.imgs?.length) {
        for (const image of this.imgs) previews.add(image);
        wrapContext(ctx);
      }
      return drawWidgets.call(this, ctx, options);
    };
  },
});
