// Opens the API reference (<base>/docs) in headless Chromium with every request off the loopback
// host aborted, and prints as JSON the operations it rendered and the requests it had to block, for
// tests/e2e/test_docs_offline.py to check. Usage: node docs.mjs <base url> [screenshot path]
import { args, screenshot, withPage } from './browser.mjs'

const [base, screenshotPath] = args
const result = { operations: [] }
await withPage(result, { offline: true, failures: true }, async (page) => {
  await page.goto(new URL('/docs', base).href)
  await page.waitForSelector('.swagger-ui .opblock', { timeout: 30000 })
  // Swagger UI breaks long paths with zero-width spaces; data-path holds the path as written.
  result.operations = await page.$$eval('.swagger-ui .opblock', (blocks) => blocks.map((b) => {
    const method = b.querySelector('.opblock-summary-method')?.textContent.trim()
    const path = b.querySelector('.opblock-summary-path')
    return `${method} ${path?.dataset.path ?? path?.textContent.replace(/\u200b/g, '').trim()}`
  }))
  // Unstyled, the page would still list the operations: check the vendored stylesheet took effect.
  result.styled = await page.$eval('.swagger-ui .opblock', (b) => getComputedStyle(b).borderRadius !== '0px')
  await screenshot(page, screenshotPath)
})
