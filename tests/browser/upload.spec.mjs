// Upload page in a real headless Chromium, driven by playwright-core.
//
// Started by tests/browser/run.sh, which installs Chromium and playwright-core, starts the
// servers and passes everything through the environment:
//   SIS_URL            base URL of a `sis server` without an API token
//   SIS_TOKEN_URL      base URL of a `sis server --api-token $SIS_TOKEN` (optional)
//   SIS_TOKEN          that token
//   SIS_NODE_DIR       npm prefix holding node_modules/playwright-core
//   SIS_WORK_DIR       scratch dir (browser profile, generated images)
//   SIS_ARTIFACT_DIR   where screenshots go
//   CHROMIUM           browser executable (default /usr/bin/chromium)
// Prints one line per check and ends with `N passed, N failed`; exits 1 on any failure.

import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';

const env = (k, d) => process.env[k] ?? d;
const BASE = env('SIS_URL').replace(/\/$/, '');
const TOKEN_URL = env('SIS_TOKEN_URL', '').replace(/\/$/, '');
const TOKEN = env('SIS_TOKEN', '');
const WORK = env('SIS_WORK_DIR');
const ARTIFACTS = env('SIS_ARTIFACT_DIR', WORK);
const require = createRequire(import.meta.url);
const { chromium } = require(join(env('SIS_NODE_DIR'), 'node_modules', 'playwright-core'));

let passed = 0, failed = 0;
async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok     ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAILED ${name}\n       ${String(e && e.stack || e).split('\n').slice(0, 4).join('\n       ')}`);
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
function eq(a, b, what) { if (a !== b) throw new Error(`${what}: expected ${JSON.stringify(b)}, got ${JSON.stringify(a)}`); }

// ---- tiny valid PNGs, written from bytes ----
const CRC = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}
function png(w, h, pixel) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
  const raw = Buffer.alloc(h * (1 + 3 * w));
  for (let y = 0; y < h; y++) {
    raw[y * (1 + 3 * w)] = 0; // filter: none
    for (let x = 0; x < w; x++) raw.set(pixel(x, y), y * (1 + 3 * w) + 1 + 3 * x);
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
const pngWidth = (buf) => (buf.subarray(0, 8).toString('latin1') === '\x89PNG\r\n\x1a\n' ? buf.readUInt32BE(16) : -1);
const md5 = (buf) => createHash('md5').update(buf).digest('hex');

const files = [
  { name: 'sunset gradient.png', bytes: png(480, 320, (x, y) => [255 - (x >> 1), 60 + (y >> 1), 40 + (x >> 2)]) },
  { name: '测试2.png', bytes: png(360, 540, (x, y) => (((x >> 5) + (y >> 5)) & 1 ? [30, 160, 90] : [240, 240, 230])) },
];
mkdirSync(join(WORK, 'files'), { recursive: true });
mkdirSync(ARTIFACTS, { recursive: true });
for (const f of files) {
  f.path = join(WORK, 'files', f.name);
  f.md5 = md5(f.bytes);
  writeFileSync(f.path, f.bytes);
}
const notImage = join(WORK, 'files', 'notes.txt');
writeFileSync(notImage, 'this is not an image\n');

async function fetchBytes(url) {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type') || '', body: Buffer.from(await res.arrayBuffer()) };
}

const context = await chromium.launchPersistentContext(join(WORK, 'profile'), {
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1100, height: 900 },
});
const pageErrors = [];
context.on('weberror', (e) => pageErrors.push(String(e.error())));

try {
  const page = await context.newPage();
  page.setDefaultTimeout(15000);

  await check('GET / serves the upload page', async () => {
    const res = await page.goto(BASE + '/');
    eq(res.status(), 200, 'status');
    assert(/text\/html/.test(res.headers()['content-type'] || ''), 'content-type is not text/html');
    assert(/sis/i.test(await page.title()), 'title does not mention sis');
    eq(await page.locator('input[type=file][multiple]').count(), 1, 'multi-file inputs');
  });

  await check('file input is labelled and reachable by keyboard', async () => {
    const label = await page.locator('input[type=file]').evaluate((i) => i.labels && i.labels.length ? i.labels[0].textContent : '');
    assert(/choose files|drop/i.test(label), `label text: ${label}`);
    await page.locator('body').focus();
    let reached = false;
    for (let i = 0; i < 5 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate(() => document.activeElement && document.activeElement.type === 'file');
    }
    assert(reached, 'Tab never focused the file input');
  });

  await check('selecting two files uploads both and shows two cards', async () => {
    await page.locator('input[type=file]').setInputFiles(files.map((f) => f.path));
    await page.locator('.card').nth(1).waitFor();
    eq(await page.locator('.card').count(), 2, 'cards');
    eq(await page.locator('[data-state=error]').count(), 0, 'failed uploads');
    eq(await page.locator('.upload progress[aria-label]').count(), 2, 'labelled progress bars');
  });

  await check('both thumbnails actually loaded (naturalWidth > 0)', async () => {
    await page.waitForFunction(() => {
      const imgs = [...document.querySelectorAll('.card img')];
      return imgs.length === 2 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    });
    const srcs = await page.locator('.card img').evaluateAll((imgs) => imgs.map((i) => i.getAttribute('src')));
    for (const s of srcs) assert(/[?&]w=200/.test(s) && /[?&]h=200/.test(s) && /fit=contain/.test(s), `thumbnail src ${s}`);
  });

  const cards = await page.locator('.card').evaluateAll((cs) => cs.map((c) => ({
    name: c.dataset.name,
    md5: c.querySelector('.md5')?.textContent.trim(),
    text: c.textContent,
    links: Object.fromEntries([...c.querySelectorAll('input[data-link]')].map((i) => [i.dataset.link, i.value])),
  })));

  await check('MD5s shown equal the files\' real MD5s', async () => {
    for (const f of files) {
      const c = cards.find((x) => x.name === f.name);
      assert(c, `no card named ${f.name} (cards: ${cards.map((x) => x.name).join(', ')})`);
      eq(c.md5, f.md5, `MD5 of ${f.name}`);
      assert(c.text.includes(f.md5), 'MD5 text not visible in the card');
    }
  });

  await check('card shows size and dimensions', async () => {
    const c = cards.find((x) => x.name === files[0].name);
    assert(c && /480\s*×\s*320/.test(c.text), `dimensions 480 × 320 not in: ${c && c.text}`);
    assert(/\d+(\.\d)? (B|KiB)/.test(c.text), 'size not shown');
  });

  await check('original links are absolute and return the exact bytes', async () => {
    for (const f of files) {
      const c = cards.find((x) => x.name === f.name);
      const url = c.links.original;
      assert(url && url.startsWith(BASE + '/v1/images/' + f.md5 + '/'), `original link ${url}`);
      eq(decodeURIComponent(url.slice(url.lastIndexOf('/') + 1)), f.name, 'name in original link');
      const r = await fetchBytes(url);
      eq(r.status, 200, `GET ${url}`);
      eq(md5(r.body), f.md5, 'MD5 of downloaded original');
    }
  });

  await check('resized links return a 300 px wide image', async () => {
    for (const f of files) {
      const url = cards.find((x) => x.name === f.name).links.resized;
      assert(/[?&]w=300\b/.test(url), `resized link ${url}`);
      const r = await fetchBytes(url);
      eq(r.status, 200, `GET ${url}`);
      assert(r.type.startsWith('image/'), `content-type ${r.type}`);
      eq(pngWidth(r.body), 300, `width of ${url}`);
    }
  });

  await check('AVIF and WebP links return 300 px wide variants in those formats', async () => {
    for (const f of files) {
      const links = cards.find((x) => x.name === f.name).links;
      const avif = await fetchBytes(links.avif);
      eq(avif.status, 200, `GET ${links.avif}`);
      eq(avif.type, 'image/avif', `content-type of ${links.avif}`);
      // ISO BMFF: 'ftyp' box with the 'avif' brand.
      eq(Buffer.from(avif.body.subarray(4, 12)).toString('latin1'), 'ftypavif', 'AVIF signature');
      const webp = await fetchBytes(links.webp);
      eq(webp.status, 200, `GET ${links.webp}`);
      eq(webp.type, 'image/webp', `content-type of ${links.webp}`);
      eq(Buffer.from(webp.body.subarray(8, 12)).toString('latin1'), 'WEBP', 'WebP signature');
    }
  });

  await check('legacy /full_down links return the exact bytes', async () => {
    for (const f of files) {
      const url = cards.find((x) => x.name === f.name).links.legacy;
      assert(url.startsWith(BASE + '/full_down?md5=' + f.md5 + '&file_name='), `legacy link ${url}`);
      const r = await fetchBytes(url);
      eq(r.status, 200, `GET ${url}`);
      eq(md5(r.body), f.md5, 'MD5 of legacy download');
    }
  });

  await check('copy button puts the link on the clipboard', async () => {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
    const card = page.locator('.card').first();
    const want = await card.locator('input[data-link=original]').inputValue();
    const btn = card.locator('button[data-copy=original]');
    await btn.focus();
    await page.keyboard.press('Enter');
    await page.waitForFunction((b) => b.textContent === 'Copied', await btn.elementHandle());
    eq(await page.evaluate(() => navigator.clipboard.readText()), want, 'clipboard');
  });

  await page.screenshot({ path: join(ARTIFACTS, 'upload-page.png'), fullPage: true });

  await check('a non-image is rejected with a clear 415 error on its own row', async () => {
    await page.locator('input[type=file]').setInputFiles([notImage]);
    const row = page.locator('.upload[data-state=error]');
    await row.waitFor();
    const text = await row.textContent();
    assert(/415/.test(text) && /not a supported image/i.test(text), `error text: ${text}`);
    eq(await row.locator('[role=alert]').count(), 1, 'alert role');
    eq(await page.locator('.card').count(), 2, 'cards after the rejected upload');
  });

  await check('a 60 MiB file gets the server\'s 413 shown, not a network error', async () => {
    const big = join(WORK, 'files', 'huge.png');
    writeFileSync(big, Buffer.concat([files[0].bytes, Buffer.alloc(60 * 1024 * 1024)]));
    await page.locator('input[type=file]').setInputFiles([big]);
    const row = page.locator('.upload[data-state=error]', { hasText: 'huge.png' });
    await row.waitFor({ timeout: 60000 });
    const text = await row.textContent();
    assert(/HTTP 413/.test(text) && /too large/i.test(text), `error text: ${text}`);
  });

  await check('dropping a file on the drop zone uploads it', async () => {
    const dropped = png(24, 24, (x, y) => [x * 10, y * 10, 128]);
    await page.locator('#drop').evaluate((zone, bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(bytes)], 'dropped.png', { type: 'image/png' }));
      for (const type of ['dragenter', 'dragover', 'drop']) {
        zone.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: dt }));
      }
    }, [...dropped]);
    const card = page.locator('.card[data-name="dropped.png"]');
    await card.waitFor();
    eq(await card.locator('.md5').textContent(), md5(dropped), 'MD5 of the dropped file');
    eq(await page.locator('.card').count(), 3, 'cards after the drop');
  });

  await page.setViewportSize({ width: 390, height: 844 });
  await check('narrow (phone) layout has no horizontal scroll', async () => {
    const over = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert(over <= 0, `page is ${over}px wider than the viewport`);
  });
  await page.screenshot({ path: join(ARTIFACTS, 'upload-page-narrow.png'), fullPage: true });

  if (TOKEN_URL) {
    await check('with --api-token: 401 asks for a token, saving it retries the upload', async () => {
      const p = await context.newPage();
      p.setDefaultTimeout(15000);
      await p.goto(TOKEN_URL + '/');
      await p.locator('input[type=file]').setInputFiles([files[0].path]);
      const row = p.locator('.upload[data-state=error]');
      await row.waitFor();
      assert(/401/.test(await row.textContent()), `error text: ${await row.textContent()}`);
      assert(await p.locator('#token-box').evaluate((d) => d.open), 'token box not opened');
      await p.getByLabel('API token', { exact: true }).fill(TOKEN);
      await p.getByRole('button', { name: 'Save token' }).click();
      await p.locator('.card').waitFor();
      eq(await p.locator('.card .md5').textContent(), files[0].md5, 'MD5 after retry');
      eq(await p.evaluate(() => localStorage.getItem('sis.apiToken')), TOKEN, 'stored token');
      await p.screenshot({ path: join(ARTIFACTS, 'upload-page-token.png'), fullPage: true });
      await p.close();
    });
  }

  await check('no uncaught errors in the page', async () => {
    eq(pageErrors.length, 0, `page errors ${pageErrors.join('; ')}`);
  });
} catch (e) {
  failed++;
  console.log(`FAILED unexpected error: ${e && e.stack || e}`);
} finally {
  await context.close().catch(() => {});
}

console.log(`screenshots: ${ARTIFACTS}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
