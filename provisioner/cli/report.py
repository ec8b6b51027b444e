"""`vnet report JSON --html FILE`: a saved JSON report (a CI artifact, say) as the HTML report
(provisioner/verify/htmlreport.py). Registered on the main group by provisioner/cli/__init__.py."""
from __future__ import annotations

from pathlib import Path

import click

from .common import handle_errors


@click.command("report")
@click.argument("json_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--html", "html_out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Write the HTML report here.")
@handle_errors
def report_cmd(json_file: Path, html_out: Path):
    """Turn a saved JSON report into one self-contained HTML file: the lab's topology drawn by
    graphviz and the matrix as a grid, each red cell with its diagnosis.

    JSON_FILE is what `vnet verify|create|up --report json` wrote, or a matrix's summary.json
    (its labs are read from the <lab>.json files beside it). The HTML fetches nothing when
    opened. Needs graphviz's `dot` (apt-get install graphviz) when the report has a topology.

    \b
    Examples:
      vnet report report.json --html report.html
      vnet report reports/summary.json --html matrix.html
    """
    from ..verify import htmlreport

    result, labs = htmlreport.load(json_file)
    click.echo(htmlreport.write_html(result, html_out, labs, source=json_file))


COMMANDS = (report_cmd,)
