// Measures a loaded page for capt.pagecheck: waits for fonts and images, then returns the content
// column's width, every <img>, and every table in the column or in (or of) class capt-headline. The
// column is the theme's <article> (Sphinx book theme), else <main>, else <body>; its width is its content box.
(async () => {
  const col = document.querySelector('main article') || document.querySelector('article')
           || document.querySelector('main') || document.body;
  for (const img of document.images) if (img.loading === 'lazy') img.loading = 'eager';
  await document.fonts.ready;
  await Promise.all([...document.images].map(img => img.decode().catch(() => null)));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const name = el => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '')
                   + [...el.classList].slice(0, 3).map(c => '.' + c).join('');
  const heading = el => {  // the nearest section title before the element, to say where it is
    const sec = el.closest('section');
    const h = sec && sec.querySelector('h1, h2, h3, h4');
    return h ? h.textContent.replace(/[#¶]/g, '').trim().slice(0, 60) : '';
  };
  const cs = getComputedStyle(col);
  const colWidth = col.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
  const images = [...document.images].map(img => ({
    src: img.getAttribute('src') || '', url: img.currentSrc || img.src, complete: img.complete,
    natural_width: img.naturalWidth, shown_width: img.getBoundingClientRect().width, section: heading(img)}));
  const tables = [...new Set([...col.querySelectorAll('table'),
                              ...document.querySelectorAll('.capt-headline table, table.capt-headline')])];
  const out = tables.map(t => {
    let box = null;
    for (let a = t.parentElement; a && a !== document.body; a = a.parentElement) {
      const ox = getComputedStyle(a).overflowX;
      if ((ox === 'auto' || ox === 'scroll') && a.scrollWidth > a.clientWidth + 0.5) {
        box = {element: name(a), width: a.clientWidth, scroll_width: a.scrollWidth};
        break;
      }
      if (a === col) break;
    }
    const head = [...t.querySelectorAll('tr')].slice(0, 1)
      .flatMap(r => [...r.children].map(c => c.textContent.trim())).filter(Boolean);
    const shown = t.checkVisibility ? t.checkVisibility() : t.getClientRects().length > 0;
    return {element: name(t), headline: !!t.closest('.capt-headline'), section: heading(t), shown,
            width: Math.max(t.getBoundingClientRect().width, t.scrollWidth), columns: head.slice(0, 4),
            scroll_box: box};
  });
  // Cell output text (a verdict, a printed summary) that only a horizontal scroll would reveal.
  const text = [...col.querySelectorAll('.cell_output pre, .output pre')]
    .filter(p => p.scrollWidth > p.clientWidth + 0.5 && p.checkVisibility())
    .map(p => ({section: heading(p), width: p.clientWidth, scroll_width: p.scrollWidth,
                line: p.textContent.split('\n').reduce((a, l) => (l.length > a.length ? l : a), '').trim().slice(0, 80)}));
  // Table cells whose line breaks fall inside a token (a number or a word, e.g. "13." / "8"): a token's
  // characters on more than one line. Whitespace between tokens is where a cell may wrap.
  const broken = [];
  for (const cell of col.querySelectorAll('table td, table th')) {
    if (!cell.checkVisibility()) continue;
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.data.matchAll(/\S+/g)) {
        const r = document.createRange();
        r.setStart(node, m.index);
        r.setEnd(node, m.index + m[0].length);
        const tops = new Set([...r.getClientRects()].filter(b => b.width > 0).map(b => Math.round(b.top)));
        if (tops.size > 1) broken.push({section: heading(cell), token: m[0], cell: cell.textContent.trim().slice(0, 60)});
      }
    }
  }
  // Links in the column: downloads (Sphinx's download role) and in-book references with a fragment
  // (citations among them), which the caller resolves against the built pages.
  const links = [...col.querySelectorAll('a[href]')].map(a => ({
    href: a.getAttribute('href'), text: a.textContent.trim().slice(0, 60), download: a.hasAttribute('download')}));
  return {title: document.title, column: name(col), column_width: colWidth, images, tables: out, scrolled_text: text,
          broken_tokens: broken, links};
})()
