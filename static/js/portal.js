// Migration control portal: start NHS.UK frontend components, and start them
// again inside content that htmx swaps in.
//
// An ES module, loaded by templates/base.html with <script type="module">, so
// it runs once the document is parsed (modules are deferred) and only in
// browsers that support ES modules, which are the ones NHS.UK frontend 10 supports.
//
// The relative import resolves beside this file under STATIC_URL. With the
// manifest storage in production, collectstatic keeps the un-hashed copies next to
// the hashed ones, so the import works there as well. The vendored file has
// the version in its name, so an upgrade still gets a new URL.
import {
  initAll,
  InitError
} from '../vendor/nhsuk/nhsuk-frontend-10.6.1.min.js'

// NHS.UK frontend's own page template sets these classes with an inline
// <script> at the top of <body>. We keep inline scripts out (a CSP may come
// later), so we set them here. initAll() does nothing unless
// `nhsuk-frontend-supported` is on <body>, and a browser running this module
// supports ES modules, which is the test that inline script makes.
document.body.classList.add('js-enabled', 'nhsuk-frontend-supported')

// A component that has already been started throws InitError when it is started again.
// That is expected when we rescan around swapped content, so we ignore it and
// report anything else.
function onError(error, context) {
  if (error instanceof InitError) {
    return
  }
  console.error('NHS.UK frontend:', error, context)
}

initAll({ onError })

// htmx fires `htmx:load` on each new element it puts in the page, after the swap
// has settled. initAll({ scope }) only searches *inside* the scope
// (querySelectorAll), so we use the new element's parent as the scope. That
// way an element swapped in with outerHTML that carries data-module is found too.
// Siblings that were already started just raise InitError, which we ignore.
//
// htmx also fires `htmx:load` on <body> once when it starts up. initAll() above
// has already covered the whole page, so we skip that one.
document.addEventListener('htmx:load', (event) => {
  const element = event.target
  if (!(element instanceof Element) || element === document.body) {
    return
  }
  initAll({ scope: element.parentElement ?? element, onError })
})
