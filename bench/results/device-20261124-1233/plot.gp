set terminal pngcairo size 900,520 noenhanced font 'DejaVu Sans,10'
set datafile separator '|'
set style fill solid 0.85 border -1
set grid ytics lc rgb '#dddddd'
set key top left
set xrange [0.4:5.6]
set bmargin 4
$throughput << EOD
1|etcd WAL\npattern|5042.2|4653.8|5659.7|0x888888|5,042
2|fio io_uring\ndsync QD1|6710.5|6210.2|7044.4|0x3b75af|6,710
3|fio io_uring\ndsync QD32|54557.5|52974.4|57733.5|0x3b75af|54,557
4|nvkv\n1 appender|6672.9|6036.9|6895.7|0x2e9e44|6,673
5|nvkv\n64 appenders|173101.8|160987.8|200954.6|0x2e9e44|173,102
EOD
$latency << EOD
1|etcd WAL\npattern|201.73|175.10|205.82|337.92|288.77|395.26|201.7|337.9
2|fio io_uring\ndsync QD1|144.38|142.34|154.62|264.19|228.35|268.29|144.4|264.2
3|fio io_uring\ndsync QD32|552.96|536.58|593.92|1056.77|1019.90|1466.37|553.0|1,057
4|nvkv\n1 appender|145.15|140.80|161.02|254.85|233.47|256.13|145.2|254.8
5|nvkv\n64 appenders|346.37|299.01|360.70|648.19|543.23|823.81|346.4|648.2
EOD
set output 'throughput.png'
set title 'Durable writes per second (median of 3, bars min–max; file target; 2026-11-24T12:33:41Z)'
set ylabel 'ops/s'
set yrange [0:231098]
set format y "%'.0f"
unset key
plot $throughput using 1:3:(0.6):6:xtic(2) with boxes lc rgb variable, '' using 1:4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black', '' using 1:5:7 with labels offset 0,0.8
set output 'latency.png'
set title 'Latency per durable write, p50 and p99 (median of 3, bars min–max; file target; 2026-11-24T12:33:41Z)'
set ylabel 'µs (log scale)'
set logscale y
set yrange [70.400:4399.104]
set format y '%g'
set key top left
plot $latency using ($1-0.19):3:(0.36):xtic(2) with boxes lc rgb '0x3b75af' title 'p50', '' using ($1+0.19):6:(0.36) with boxes lc rgb '0xd9822b' title 'p99', '' using ($1-0.19):4:(0):($5-$4) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, '' using ($1+0.19):7:(0):($8-$7) with vectors heads size screen 0.006,90 lc rgb 'black' notitle, '' using ($1-0.19):(105.599):9 with labels font ',8' tc rgb 'white' notitle, '' using ($1+0.19):(105.599):10 with labels font ',8' tc rgb 'white' notitle
