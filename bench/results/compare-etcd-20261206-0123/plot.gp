set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,4551.5,2016.8,3557.6,1659.1,958.3,1231.4
16,23398.8,10805.5,15150.4,5134.5,4103.5,3805.6
64,44705.3,18200.8,21513.6,11398.5,7596.1,6043.8
256,88151.3,23989.5,33970.3,29527.2,11830.0,15455.7
EOD
set output 'throughput.png'
set title 'put throughput against clients (medians)'
set xlabel 'clients (one connection per 10)'
set ylabel 'puts/s'
set logscale x 2
set logscale y
set grid
set key top left
set xtics (1, 16, 64, 256)
set xrange [0.8:320]
plot $throughput using 1:2 with linespoints lw 2 pt 7 dt 1 lc rgb '#1f77b4' title 'nvkv, one node', $throughput using 1:3 with linespoints lw 2 pt 7 dt 1 lc rgb '#ff7f0e' title 'etcd, one node', $throughput using 1:4 with linespoints lw 2 pt 7 dt 1 lc rgb '#2ca02c' title 'nvkv-etcd, one node', $throughput using 1:5 with linespoints lw 2 pt 5 dt 2 lc rgb '#1f77b4' title 'nvkv, three nodes', $throughput using 1:6 with linespoints lw 2 pt 5 dt 2 lc rgb '#ff7f0e' title 'etcd, three nodes', $throughput using 1:7 with linespoints lw 2 pt 5 dt 2 lc rgb '#2ca02c' title 'nvkv-etcd, three nodes'
unset logscale x
unset xtics
set xtics
set autoscale x
set output
set output 'latency.png'
set terminal png size 1200,650 noenhanced
set multiplot layout 1,2 title 'latency percentiles, medians (µs, log scale)'
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [10:205783]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency1 << EOD
put-c1,206.2,449.0,282.9,379.6,1116.2,525.8
put-c16,516.9,1366.0,881.2,2006.0,4816.9,3375.1
put-c64,1108.0,3092.5,2445.3,5308.4,11255.8,9781.2
put-c256,2367.5,9568.3,6762.5,11575.3,33783.8,23986.2
range-l,260.9,5398.5,1054.7,942.1,27099.1,2781.2
range-s,178.4,5066.8,914.4,612.4,24969.2,2367.5
txn,1230.8,8896.5,2734.1,6860.8,36700.2,10428.4
watch,548.9,789.5,624.1,4321.3,5103.6,5505.0
EOD
set title 'one node'
plot $latency1 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
$latency3 << EOD
put-c1,546.8,967.2,727.6,1392.6,3461.1,2085.9
put-c16,2363.4,3500.0,3567.6,11984.9,11075.6,14188.5
put-c64,4034.6,7716.9,7495.7,20119.6,23593.0,59932.7
put-c256,7053.3,19300.4,15147.0,23101.4,67895.3,41615.4
range-l,1231.9,6598.7,4304.9,5922.8,30818.3,16244.7
range-s,345.1,3547.1,1086.5,1571.8,32948.2,4915.2
txn,4440.1,19136.5,8060.9,39551.0,86835.2,102891.5
watch,2717.7,1706.0,3014.7,10633.2,9568.3,16474.1
EOD
set title 'three nodes'
plot $latency3 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
