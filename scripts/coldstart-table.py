"""The cold-start sensitivity table of docs/simulation/README.md from `keda-gpu-sim --sweep --suite
--cold-start-s N` outputs: python3 scripts/coldstart-table.py 30=DIR/sweep.json 60=... (one per column)."""
import json, statistics, sys
cols = [a.split('=', 1) for a in sys.argv[1:]]
data = {c: json.load(open(p)) for c, p in cols}
policies = [c['policy'] for c in next(iter(data.values()))['scenarios'][0]['curves'] if not c['reference']]
print('| policy | ' + ' | '.join(f'{c} s' for c, _ in cols) + ' |')
print('|---|' + '---:|' * len(cols))
for pol in policies:
    cells = []
    for c, _ in cols:
        xs = [cv['gpu_hours_at_95'] for s in data[c]['scenarios'] for cv in s['curves']
              if cv['policy'] == pol and cv['gpu_hours_at_95'] is not None]
        n = len(data[c]['scenarios'])
        cells.append(f'{len(xs)}/{n}, median {statistics.median(xs):.1f}' if xs else f'0/{n}')
    print(f'| {pol} | ' + ' | '.join(cells) + ' |')
print()
for c, _ in cols:
    d = data[c]
    print(f'{c} s: median composite vs cheapest baseline at 95 %: {d["median_composite_vs_baseline_at_95"]}, at 99 %: {d["median_composite_vs_baseline_at_99"]}')
