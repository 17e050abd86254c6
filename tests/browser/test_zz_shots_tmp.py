from tests.browser.test_circuits_browser import run_from_the_page, circuit_set  # noqa: F401

PAGE_WIDTH = "() => document.documentElement.scrollWidth"


def test_shots(page, circuit_set):
    set_id, _ = circuit_set
    run_from_the_page(page, set_id)
    graph_url = page.url.split("#")[0]
    page.locator("input.pin").first.check()
    for width in (1400, 390):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"/saes/{set_id}/circuits")
        page.fill("#circuit-prompt", "the cat sat on the")
        page.click("#show-targets")
        page.locator(".pick-target").first.wait_for()
        print(width, "form", page.evaluate(PAGE_WIDTH))
        page.screenshot(path=f"/work/shots/h15-circuits-{width}.png", full_page=True)
        page.goto(graph_url)
        page.wait_for_selector("#graph circle.node.feature")
        print(width, "graph", page.evaluate(PAGE_WIDTH))
        page.screenshot(path=f"/work/shots/h15-circuit-{width}.png", full_page=True)
