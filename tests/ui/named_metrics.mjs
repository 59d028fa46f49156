// Opens Tally's UI in headless Chromium, picks a named metric (from /api/metrics) grouped by source,
// and prints as JSON what the metric picker offers and what the chart drew for one source, for
// tests/e2e/test_named_metrics.py to check. Usage: node named_metrics.mjs <url> <metric> <source>
import { args, withPage } from './browser.mjs'

const [url, metric, source] = args
const result = {}
await withPage(result, {}, async (page) => {
  result.step = 'metric picker'
  await page.goto(url)
  await page.waitForSelector(`#metric option[value="${metric}"]`, { state: 'attached', timeout: 30000 })
  result.options = await page.$$eval('#metric option', (os) => os.map((o) => [o.value, o.textContent]))
  // Purchases only: the test stack holds more event types than one request may name (the events table
  // asks for every type listed when none is chosen). The first load's answer, an error here, is awaited
  // first (up to 90 s: 100 types take seconds a request on a test stack holding many): arriving late, it
  // would stand over the answers to the choices below.
  result.step = 'type picker'
  await page.waitForSelector('#types option[value="purchase"]', { state: 'attached', timeout: 30000 })
  result.step = 'first answer'
  await page.waitForFunction(() => !document.querySelector('#error').hidden || document.querySelector('#evinfo').textContent,
    null, { timeout: 90000 })
  await page.selectOption('#types', ['purchase'])
  await page.selectOption('#range', '15m')
  await page.selectOption('#group', 'source')
  await page.selectOption('#metric', metric)
  // The redraw for this metric, grouped by source, over the 15 minutes chosen (an answer to an earlier
  // choice may still arrive first), with this run's source among the series.
  result.step = 'redraw'
  await page.waitForFunction(([m, s]) => {
    /* global plot */
    return typeof plot !== 'undefined' && plot && document.querySelector('#metric').value === m &&
      plot.scales.x.max - plot.scales.x.min === 15 * 60 &&
      plot.series.some((x) => x.label === s) && plot.axes[1].label === document.querySelector('#metric').selectedOptions[0].text
  }, [metric, source], { timeout: 30000 })
  Object.assign(result, await page.evaluate((s) => {
    const i = plot.series.findIndex((x) => x.label === s)
    return { axis: plot.axes[1].label, series: plot.data[0].map((t, j) => [t, plot.data[i][j]]) }
  }, source))
  // The live refresh (every 2 s) clears an error a late answer to an earlier choice left standing.
  await page.waitForFunction(() => document.querySelector('#error').hidden, null, { timeout: 10000 }).catch(() => {})
  result.step = 'done'
  result.error_banner = await page.$eval('#error', (e) => (e.hidden ? '' : e.textContent))
})
