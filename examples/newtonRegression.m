%% Newton training of a small regression network with hessiancore
% Fits y = sin(2x) + noise with a 1-8-1 tanh network by damped Newton steps (dlnewtonUpdate): the
% exact Hessian of a few dozen parameters, Levenberg-Marquardt damping, a handful of steps where
% gradient descent needs thousands. Runs in MATLAB (Deep Learning Toolbox) and, with the test doubles
% of tests/octave on the path, in GNU Octave.
%
% Needs the toolbox folder on the path and a configured Python (run hessiancoreSetup once).

rng(0);
x = linspace(-2, 2, 64);
y = sin(2 * x) + 0.05 * randn(size(x));
X = dlarray(x, 'CB');
T = dlarray(y, 'CB');

layers = [featureInputLayer(1), fullyConnectedLayer(8), tanhLayer, fullyConnectedLayer(1)];
net = dlnetwork(layers);

numIterations = 15;
damping = 1e-2;
losses = zeros(numIterations, 1);
for iteration = 1:numIterations
    [candidate, info] = dlnewtonUpdate(net, X, T, 'Damping', damping);
    % Levenberg-Marquardt: keep the step and trust the quadratic model more when it helped,
    % otherwise stay and damp more.
    if info.LossAfter < info.LossBefore
        net = candidate;
        damping = max(damping / 3, 1e-6);
        losses(iteration) = info.LossAfter;
    else
        damping = damping * 5;
        losses(iteration) = info.LossBefore;
    end
    fprintf('iteration %2d  loss %.4e  damping %.1e\n', iteration, losses(iteration), damping);
end

Y = predict(net, X);
rmse = sqrt(mean((extractdata(Y) - y).^2));
fprintf('final RMSE %.4f (noise level 0.05)\n', rmse);
