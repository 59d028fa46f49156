// Opens Dagster's global lineage page (<dagster url>/asset-groups) in headless Chromium with every
// request off the loopback host aborted, expands every group, and prints as JSON the asset names the
// graph drew and the requests it had to block, for tests/e2e/test_dagster_ui.py to check.
// Usage: node lineage.mjs <dagster url> [screenshot path]
import { args, screenshot, withPage } from './browser.mjs'

const [base, screenshotPath] = args
const result = { groups: [], text: '' }
await withPage(result, { viewport: { width: 3200, height: 2400 }, offline: true }, async (page) => {
  await page.goto(new URL('/asset-groups', base).href)
  await page.waitForSelector('text=Global asset lineage', { timeout: 60000 })
  await page.waitForTimeout(3000)
  // Five groups side by side are larger than any viewport at the zoom a load starts with, and only
  // what is in view is drawn (and clickable): zoom out until the whole graph is in view.
  const zoomOut = async () => {
    const button = page.locator('[aria-label="zoom_out"]')
    for (let i = 0; i < 12 && (await button.count()); i++) {
      await button.first().click()
      await page.waitForTimeout(400)
    }
  }
  await zoomOut()
  // Groups start collapsed: open each with its unfold icon. Opening one zooms in on it; the page
  // remembers which groups are open, and a fresh load fits the whole graph in view.
  const unfold = page.locator('svg foreignObject [aria-label="unfold_more"]')
  for (let round = 0; round < 4 && (await unfold.count()); round++) {
    while (await unfold.count()) {
      await unfold.first().click()
      await page.waitForTimeout(1000)
    }
    await page.reload()
    await page.waitForSelector('svg foreignObject', { timeout: 60000 })
    await page.waitForTimeout(3000)
    await zoomOut()
  }
  // Let the nodes' latest events and checks load before the picture is taken.
  await page.waitForFunction(() => !document.body.innerText.includes('Loading'), null, { timeout: 30000 }).catch(() => {})
  result.text = await page.evaluate(() => [...document.querySelectorAll('svg foreignObject')].map((f) => f.textContent).join('\n'))
  // The viewport only: the graph is drawn to fit it.
  await screenshot(page, screenshotPath, { fullPage: false })
})
