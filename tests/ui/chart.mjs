// Opens Tally's UI in headless Chromium, charts one event type over the last 15 minutes as count, sum
// and avg, and prints as JSON what uPlot was given to draw (plot.data) and where the canvas put the y
// axis's texts, for tests/e2e/test_ui.py to check. Saves a screenshot of the chart per metric.
// Usage: node chart.mjs <url> <event type> <expected totals as JSON, {metric: sum of values}> <screenshot prefix>
import { args, withPage } from './browser.mjs'

const [url, eventType, totalsJson, shotPrefix] = args
const totals = JSON.parse(totalsJson)
const result = { charts: {} }

// uPlot draws tick labels and the axis label on its canvas, not in the DOM: every fillText is measured
// where it lands (through the canvas's transform, which rotates the y label), per canvas, from its
// last full clear (the start of each redraw).
function recordCanvasText () {
  const proto = CanvasRenderingContext2D.prototype
  const fillText = proto.fillText
  const clearRect = proto.clearRect
  proto.clearRect = function (x, y, w, h) {
    if (x <= 0 && y <= 0 && w >= this.canvas.width && h >= this.canvas.height) this.canvas.__texts = []
    return clearRect.call(this, x, y, w, h)
  }
  proto.fillText = function (text, x, y, ...rest) {
    const m = this.measureText(text)
    const t = this.getTransform()
    const corners = [x - m.actualBoundingBoxLeft, x + m.actualBoundingBoxRight].flatMap((px) =>
      [y - m.actualBoundingBoxAscent, y + m.actualBoundingBoxDescent].map((py) => t.transformPoint({ x: px, y: py })))
    const xs = corners.map((c) => c.x)
    const ys = corners.map((c) => c.y);
    (this.canvas.__texts ??= []).push({
      text: String(text),
      rotated: t.b !== 0 || t.c !== 0,
      box: [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)],
    })
    return fillText.call(this, text, x, y, ...rest)
  }
}

await withPage(result, {}, async (page) => {
  await page.addInitScript(recordCanvasText)
  await page.goto(url)
  await page.waitForSelector(`#types option[value="${eventType}"]`, { state: 'attached', timeout: 30000 })
  // The first load's answer is awaited first (up to 90 s: with no type chosen the events table asks
  // for 100 types, which takes seconds a request on a test stack holding many): arriving late, it
  // would stand over the choices below.
  await page.waitForFunction(() => !document.querySelector('#error').hidden ||
    document.querySelector('#evinfo').textContent, null, { timeout: 90000 })
  await page.selectOption('#types', [eventType])
  await page.selectOption('#range', '15m')
  for (const [metric, total] of Object.entries(totals)) {
    await page.selectOption('#metric', metric)
    // The redraw for this metric, type and range: one series whose values add up to what was sent, over
    // 15 minutes. The answer for the first choice (the default hour) can arrive after the 15-minute
    // one was asked for, and it holds the same events: without the range it would pass for the answer.
    await page.waitForFunction(([m, total]) => {
      /* global plot */
      if (typeof plot === 'undefined' || !plot || plot.axes[1].label !== m || plot.series.length !== 2) return false
      if (plot.scales.x.max - plot.scales.x.min !== 15 * 60) return false
      const sum = plot.data[1].reduce((a, v) => a + (v ?? 0), 0)
      return Math.abs(sum - total) < 1e-6 * Math.max(1, total)
    }, [metric, total], { timeout: 30000 })
    result.charts[metric] = await page.evaluate(() => {
      const { left, top, width, height } = plot.bbox
      return {
        times: plot.data[0],
        values: plot.data[1],
        label: plot.axes[1].label,
        plot_box: [left, top, left + width, top + height],
        canvas: [plot.ctx.canvas.width, plot.ctx.canvas.height],
        texts: plot.ctx.canvas.__texts ?? [],
      }
    })
    if (shotPrefix) await page.locator('#chart').screenshot({ path: `${shotPrefix}-${metric}.png` })
  }
  // An error of the events table, which shares the banner (CI: Cassandra's reads timing out for seconds
  // right after a test restarted it), stands until the next live refresh succeeds, every 2 s.
  await page.waitForFunction(() => document.querySelector('#error').hidden, null, { timeout: 20000 }).catch(() => {})
  result.error_banner = await page.$eval('#error', (e) => (e.hidden ? '' : e.textContent))
})
