// Gallery page (/gallery) in a real headless Chromium, driven by playwright-core.
//
// Started by tests/browser/run.sh with a fresh `sis server --api-token $SIS_TOKEN`:
//   SIS_GALLERY_URL    base URL of that server (empty store)
//   SIS_TOKEN          its token
//   SIS_NODE_DIR, SIS_WORK_DIR, SIS_ARTIFACT_DIR, CHROMIUM as for upload.spec.mjs
// Uploads 30 images through the API, pages through all of them in the gallery (the page is
// opened with ?limit=7, so five pages), deletes one through the page (confirmed; a dismissed
// dialog keeps it) and checks it is gone from the page and from the server; no script errors.
// Prints one line per check and ends with `N passed, N failed`; exits 1 on any failure.

import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';

const env = (k, d) => process.env[k] ?? d;
const BASE = env('SIS_GALLERY_URL').replace(/\/$/, '');
const TOKEN = env('SIS_TOKEN');
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

// ---- small valid PNGs, written from bytes ----
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
  ihdr[8] = 8; ihdr[9] = 2;
  const raw = Buffer.alloc(h * (1 + 3 * w));
  for (let y = 0; y < h; y++) {
    raw[y * (1 + 3 * w)] = 0;
    for (let x = 0; x < w; x++) raw.set(pixel(x, y), y * (1 + 3 * w) + 1 + 3 * x);
  }
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
const md5 = (buf) => createHash('md5').update(buf).digest('hex');

// 30 distinct images: hue and size vary with i.
const images = Array.from({ length: 30 }, (_, i) => {
  const w = 160 + 7 * i, h = 120 + 3 * i;
  const bytes = png(w, h, (x, y) => [(i * 37 + x) & 255, (i * 91 + y) & 255, (i * 53 + ((x ^ y) >> 2)) & 255]);
  return { name: `photo-${String(i).padStart(2, '0')}.png`, bytes, md5: md5(bytes), w, h };
});

async function api(path, init = {}) {
  return fetch(BASE + path, { ...init, headers: { Authorization: 'Bearer ' + TOKEN, ...(init.headers || {}) } });
}

const context = await chromium.launchPersistentContext(join(WORK, 'gallery-profile'), {
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 900 },
});
const pageErrors = [];
const badResponses = [];

try {
  await check('30 images uploaded through the API', async () => {
    for (const img of images) {
      const r = await api('/v1/images?name=' + img.name, { method: 'POST', body: img.bytes });
      eq(r.status, 201, `upload ${img.name}`);
    }
  });

  const page = await context.newPage();
  page.setDefaultTimeout(15000);
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  // Script errors only: Chromium also logs expected HTTP errors (the 401 before the token).
  page.on('console', (m) => {
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) pageErrors.push('console: ' + m.text());
  });
  page.on('response', (r) => { if (r.status() >= 500) badResponses.push(`${r.status()} ${r.url()}`); });

  await check('the upload page links to the gallery', async () => {
    await page.goto(BASE + '/');
    await page.getByRole('link', { name: /gallery/i }).click();
    await page.waitForURL(/\/gallery$/);
  });

  await check('without a token the gallery asks for it', async () => {
    await page.goto(BASE + '/gallery?limit=7');
    const err = page.locator('#error');
    await err.waitFor();
    assert(/API token/.test(await err.textContent()), `error: ${await err.textContent()}`);
    assert(await page.locator('#token-box').evaluate((d) => d.open), 'token box not opened');
    eq(await page.locator('.item').count(), 0, 'cards without a token');
  });

  await check('saving the token lists the first page', async () => {
    await page.getByLabel('API token', { exact: true }).fill(TOKEN);
    await page.getByRole('button', { name: 'Save token' }).click();
    await page.locator('.item').first().waitFor();
    assert(await page.locator('.item').count() >= 7, 'first page');
  });

  await check('scrolling pages through all 30 images, each once, in MD5 order', async () => {
    for (let i = 0; i < 20 && !(await page.locator('#end').isVisible()); i++) {
      await page.locator('#sentinel').scrollIntoViewIfNeeded();
      await page.mouse.wheel(0, 4000);
      await page.waitForTimeout(300);
    }
    assert(await page.locator('#end').isVisible(), 'end of the list not reached');
    const shown = await page.locator('.item').evaluateAll((els) => els.map((e) => e.dataset.md5));
    eq(shown.length, 30, 'cards');
    eq(new Set(shown).size, 30, 'distinct MD5s');
    eq(JSON.stringify(shown), JSON.stringify([...images.map((i) => i.md5)].sort()), 'MD5 order');
  });

  await check('each card shows its name, size, format and dimensions', async () => {
    for (const img of [images[0], images[29]]) {
      const card = page.locator(`.item[data-md5="${img.md5}"]`);
      eq(await card.locator('.name').textContent(), img.name, 'name');
      const facts = await card.locator('.facts').first().textContent();
      assert(facts.includes(`${img.w}×${img.h}`) && facts.includes('PNG'), `facts: ${facts}`);
    }
  });

  await check('thumbnails are loaded through ?w= and are small', async () => {
    const card = page.locator(`.item[data-md5="${images[29].md5}"]`);
    await card.scrollIntoViewIfNeeded();
    const img = card.locator('.thumb img');
    await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await img.elementHandle());
    const src = await img.getAttribute('src');
    assert(/\?w=240$/.test(src), `src ${src}`);
    eq(await img.evaluate((el) => el.naturalWidth), 240, 'thumbnail width');
  });

  await check('copy link puts the absolute original URL on the clipboard', async () => {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
    const card = page.locator(`.item[data-md5="${images[3].md5}"]`);
    await card.getByRole('button', { name: 'Copy link' }).click();
    const text = await page.evaluate(() => navigator.clipboard.readText());
    eq(text, `${BASE}/v1/images/${images[3].md5}/${images[3].name}`, 'clipboard');
    const r = await fetch(text);
    eq(r.status, 200, 'copied link works without a token');
    eq(md5(Buffer.from(await r.arrayBuffer())), images[3].md5, 'bytes behind the link');
  });

  const victim = images[11];
  await check('dismissing the delete confirmation keeps the image', async () => {
    page.once('dialog', (d) => d.dismiss());
    await page.locator(`.item[data-md5="${victim.md5}"]`).getByRole('button', { name: 'Delete' }).click();
    await page.waitForTimeout(300);
    eq(await page.locator(`.item[data-md5="${victim.md5}"]`).count(), 1, 'card after dismiss');
    eq((await fetch(`${BASE}/v1/images/${victim.md5}/meta`)).status, 200, 'still on the server');
  });

  await check('confirming the delete removes it from the gallery and from the server', async () => {
    let message = '';
    page.once('dialog', (d) => { message = d.message(); d.accept(); });
    await page.locator(`.item[data-md5="${victim.md5}"]`).getByRole('button', { name: 'Delete' }).click();
    await page.locator(`.item[data-md5="${victim.md5}"]`).waitFor({ state: 'detached' });
    assert(message.includes(victim.name) && message.includes(victim.md5), `dialog: ${message}`);
    eq((await fetch(`${BASE}/v1/images/${victim.md5}/meta`)).status, 404, 'meta after delete');
    eq((await fetch(`${BASE}/v1/images/${victim.md5}`)).status, 404, 'original after delete');
    eq(await page.locator('.item').count(), 29, 'cards after delete');
  });

  await check('after a reload the deleted image is not listed (29 left)', async () => {
    await page.reload();
    await page.locator('.item').first().waitFor();
    for (let i = 0; i < 20 && !(await page.locator('#end').isVisible()); i++) {
      await page.mouse.wheel(0, 4000);
      await page.waitForTimeout(300);
    }
    const shown = await page.locator('.item').evaluateAll((els) => els.map((e) => e.dataset.md5));
    eq(shown.length, 29, 'cards after reload');
    assert(!shown.includes(victim.md5), 'deleted MD5 listed again');
    const listed = await (await api('/v1/images?limit=1000')).json();
    eq(listed.images.length, 29, 'server listing');
  });

  await check('screenshot kept as a test artefact', async () => {
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForFunction(() => [...document.querySelectorAll('.item img')].slice(0, 8)
      .every((i) => i.complete && i.naturalWidth > 0));
    await page.screenshot({ path: join(ARTIFACTS, 'gallery.png') });
  });

  await check('no uncaught errors in the page and no 5xx', async () => {
    eq(pageErrors.length, 0, `page errors ${pageErrors.join('; ')}`);
    eq(badResponses.length, 0, `5xx ${badResponses.join('; ')}`);
  });
} catch (e) {
  failed++;
  console.log(`FAILED unexpected error: ${e && e.stack || e}`);
} finally {
  await context.close().catch(() => {});
}

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
