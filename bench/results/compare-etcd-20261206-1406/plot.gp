set terminal png size 1000,600 noenhanced
set datafile separator ','
$throughput << EOD
1,8140.9,3541.8,5142.0
16,37130.2,10309.3,18138.0
64,50718.9,14394.3,21705.2
256,83723.8,18724.5,30299.9
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
plot $throughput using 1:2 with linespoints lw 2 pt 7 dt 1 lc rgb '#1f77b4' title 'nvkv, one node', $throughput using 1:3 with linespoints lw 2 pt 7 dt 1 lc rgb '#ff7f0e' title 'etcd, one node', $throughput using 1:4 with linespoints lw 2 pt 7 dt 1 lc rgb '#2ca02c' title 'nvkv-etcd, one node'
unset logscale x
unset xtics
set xtics
set autoscale x
set output
set output 'latency.png'
set terminal png size 600,650 noenhanced
set multiplot layout 1,1 title 'latency percentiles, medians (µs, log scale)'
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set logscale y
set yrange [10:107086]
set format y '%.0s%c'
set xtics rotate by -40
unset xlabel
set ylabel 'µs'
set key top left
$latency1 << EOD
put-c1,109.2,252.0,176.3,316.9,788.0,466.7
put-c16,331.3,1368.1,769.0,996.9,4972.5,2084.9
put-c64,941.6,4057.1,2576.4,3723.3,12197.9,5820.4
put-c256,2484.2,12173.3,7974.9,8593.4,42696.7,18956.3
range-l,388.1,7143.4,1531.9,1487.9,36044.8,3577.9
range-s,238.0,7299.1,1180.7,979.5,32768.0,2871.3
txn,1291.3,9650.2,2797.6,4726.8,53542.9,9248.8
watch,592.4,691.7,665.6,1330.2,4493.3,2083.8
EOD
set title 'one node'
plot $latency1 using 2:xtic(1) title 'nvkv p50' lc rgb '#1f77b4', '' using 3 title 'etcd p50' lc rgb '#ff7f0e', '' using 4 title 'nvkv-etcd p50' lc rgb '#2ca02c', '' using 5 title 'nvkv p99' lc rgb '#aec7e8', '' using 6 title 'etcd p99' lc rgb '#ffbb78', '' using 7 title 'nvkv-etcd p99' lc rgb '#98df8a'
unset multiplot
set output
