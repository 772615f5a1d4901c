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
  return {title: document.title, column: name(col), column_width: colWidth, images, tables: out, scrolled_text: text};
})()
